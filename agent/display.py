"""Whether a live display can be used: X11 needed, Wayland explained, with advice in every error."""

from __future__ import annotations

import os
import sys

from agent.errors import DisplayError


def check_display() -> None:
    """Raise DisplayError with advice when no X display can be used for live capture/input."""
    if sys.platform.startswith("linux"):
        if not os.environ.get("DISPLAY"):
            if os.environ.get("WAYLAND_DISPLAY"):
                raise DisplayError(
                    "Wayland session without XWayland DISPLAY: deskpilot needs X11, because Wayland "
                    "does not let a program capture the screen or send input to other windows. Log in "
                    "to an X11 session, or use --dry-run --screens PATH"
                )
            raise DisplayError("no X display: set DISPLAY or use --dry-run --screens PATH")


def display_warning() -> str | None:
    """A caution worth printing before a live run, or None."""
    if os.environ.get("XDG_SESSION_TYPE") == "wayland" and os.environ.get("DISPLAY"):
        return (
            "this is a Wayland session: through XWayland deskpilot sees and controls only X11 "
            "windows, and native Wayland windows may show up black. An X11 session works fully"
        )
    return None
