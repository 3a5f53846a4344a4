"""Scoping a run to one application window on X11 (``deskpilot run --window PATTERN``).

This module owns finding top-level windows (``list_windows``, ``match_windows``) and the
``WindowScope`` gate of a scoped run: its capture shows only the window (fewer image
tokens), its ``refuse`` turns away pointing actions outside the window and keyboard
actions while another window has the focus.

Patterns (case-insensitive substrings): ``firefox`` matches the window class (either
part of ``WM_CLASS``: instance or class name) or the title; ``class:NAME`` only the
class; ``title:TEXT`` only the title; ``id:0x3a00007`` one window by its X id (as listed
when a pattern matches nothing or several windows).

Windows come from the window manager (EWMH ``_NET_CLIENT_LIST``, stacking from
``_NET_CLIENT_LIST_STACKING``, the active one from ``_NET_ACTIVE_WINDOW``); without an
EWMH window manager, from the mapped children of the root window that have a
``WM_CLASS`` (and the X input focus). Rectangles are the client window's own area (the
window manager's frame and title bar left out; GTK client-side shadows,
``_GTK_FRAME_EXTENTS``, too), in screen space, read again at every step because windows
move. Pop-up menus and tooltips (override-redirect windows) are not the window: a menu
reaching outside it is cut from the capture and clicks there are refused.

python-xlib and mss are imported inside functions: the module imports without a display.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from PIL import Image

from agent.capture import Screenshot
from agent.display import check_display
from agent.errors import DisplayError, UsageError
from agent.geometry import MonitorGeometry
from agent.settle import thumbnail
from agent.text import quoted

KEYBOARD_KINDS = frozenset({"key", "type"})  # go to the focused window, wherever the pointer is
NO_INPUT_KINDS = frozenset({"WAIT", "DONE", "FAIL"})
PREFIXES = ("class", "title", "id")
TITLE_LIMIT = 80  # characters of a (untrusted) title shown in messages


@dataclass(frozen=True)
class WindowInfo:
    """One top-level client window; its rectangle in screen space."""

    id: int
    wm_class: tuple[str, ...]  # (instance, class name), as WM_CLASS gives them
    title: str
    left: int
    top: int
    width: int
    height: int

    def label(self) -> str:
        """``id 0x... class tk.Tk title '...'`` for people (title and class made printable)."""
        return f"id {self.id:#x}  class {quoted('.'.join(self.wm_class), 60)}  title {quoted(self.title, TITLE_LIMIT)}"


def _parse(pattern: str) -> tuple[str, str]:
    """``class:NAME`` / ``title:TEXT`` / ``id:N`` / anything else -> (field, text)."""
    prefix, sep, rest = pattern.partition(":")
    if sep and prefix.strip().lower() in PREFIXES:
        field, text = prefix.strip().lower(), rest
    else:
        field, text = "any", pattern
    if not text.strip():
        raise UsageError(
            f"--window {quoted(pattern)} names no window: give a class or a title, "
            "e.g. --window firefox, --window class:xterm or --window 'title:Inbox'"
        )
    return field, text


def match_windows(pattern: str, windows: list[WindowInfo]) -> list[WindowInfo]:
    """The windows ``pattern`` selects, in the order given (see the module docstring)."""
    field, text = _parse(pattern)
    if field == "id":
        try:
            wanted = int(text.strip(), 0)
        except ValueError:
            raise UsageError(f"--window id:{quoted(text)}: an id is a number such as 0x3a00007") from None
        return [w for w in windows if w.id == wanted]
    needle = text.casefold()
    return [
        w
        for w in windows
        if (field in ("any", "class") and any(needle in part.casefold() for part in w.wm_class))
        or (field in ("any", "title") and needle in w.title.casefold())
    ]


# --- X11 access (python-xlib, imported lazily) -------------------------------------


def _open(display_name: str | None) -> Any:
    """A python-xlib Display, or DisplayError saying what is wrong."""
    if sys.platform in ("darwin", "win32"):
        raise DisplayError("--window works on X11 desktops only (Linux, BSD): run without --window here")
    if display_name is None:
        check_display()
    try:
        from Xlib import display as xdisplay
    except ImportError as exc:  # pragma: no cover - python-xlib is a dependency on Linux
        raise DisplayError(f"python-xlib is not installed ({exc}): --window needs it") from None
    try:
        return xdisplay.Display(display_name)
    except Exception as exc:  # DisplayNameError, DisplayConnectionError, Xauth errors
        raise DisplayError(f"cannot open the X display for --window ({exc}): is DISPLAY right?") from None


def _window(display: Any, window_id: int) -> Any:
    return display.create_resource_object("window", window_id)


def _ids(display: Any, window: Any, name: str) -> list[int] | None:
    """A WINDOW or CARDINAL list property, or None when the window does not have it."""
    from Xlib import X

    prop = window.get_full_property(display.get_atom(name), X.AnyPropertyType)
    return [int(v) for v in prop.value] if prop is not None and prop.format == 32 else None


def _text(window: Any, atom: int, kind: int = 0) -> str:
    """A text property (any type when ``kind`` is 0), decoded."""
    value = window.get_full_text_property(atom, kind)
    if isinstance(value, bytes):  # COMPOUND_TEXT and other types python-xlib leaves undecoded
        value = value.decode("utf-8", "replace")
    return value or ""


def _title(display: Any, window: Any) -> str:
    from Xlib import Xatom

    utf8 = _text(window, display.get_atom("_NET_WM_NAME"), display.get_atom("UTF8_STRING"))
    return utf8 or _text(window, Xatom.WM_NAME)


def _wm_class(window: Any) -> tuple[str, ...]:
    from Xlib import Xatom

    return tuple(part for part in _text(window, Xatom.WM_CLASS).split("\0") if part)


def _rect(display: Any, window: Any) -> tuple[int, int, int, int]:
    """The client window's area in root (screen) coordinates: left, top, width, height."""
    geometry = window.get_geometry()
    origin = display.screen().root.translate_coords(window, 0, 0)
    left, top, width, height = origin.x, origin.y, geometry.width, geometry.height
    extents = _ids(display, window, "_GTK_FRAME_EXTENTS")  # left, right, top, bottom: CSD shadows
    if extents and len(extents) == 4:
        e_left, e_right, e_top, e_bottom = extents
        if e_left + e_right < width and e_top + e_bottom < height:
            left, top = left + e_left, top + e_top
            width, height = width - e_left - e_right, height - e_top - e_bottom
    return left, top, width, height


def _viewable(window: Any) -> bool:
    from Xlib import X

    return window.get_attributes().map_state == X.IsViewable


def _clients(display: Any, stacking: bool = False) -> list[int]:
    """Top-level client ids from the window manager (bottom to top with ``stacking``)."""
    root = display.screen().root
    names = ("_NET_CLIENT_LIST_STACKING", "_NET_CLIENT_LIST") if stacking else ("_NET_CLIENT_LIST",)
    for name in names:
        ids = _ids(display, root, name)
        if ids is not None:
            return ids
    # No EWMH window manager: the root's children, which X lists bottom to top.
    from Xlib import error

    found = []
    for child in root.query_tree().children:
        try:
            if _wm_class(child) and _viewable(child):
                found.append(child.id)
        except error.XError:  # gone meanwhile
            continue
    return found


def _info(display: Any, window_id: int) -> WindowInfo:
    window = _window(display, window_id)
    return WindowInfo(window_id, _wm_class(window), _title(display, window), *_rect(display, window))


def _list(display: Any) -> list[WindowInfo]:
    from Xlib import error

    windows = []
    for window_id in _clients(display):
        try:
            windows.append(_info(display, window_id))
        except error.XError:  # closed while we looked
            continue
    return windows


def _active(display: Any) -> int | None:
    """The active window's id (``_NET_ACTIVE_WINDOW``, else the X input focus), or None."""
    active = _ids(display, display.screen().root, "_NET_ACTIVE_WINDOW")
    if active and active[0]:
        return active[0]
    focus = display.get_input_focus().focus  # a Window, or X.NONE / X.PointerRoot as ints
    return getattr(focus, "id", None)


def _belongs(display: Any, window_id: int, target_id: int) -> bool:
    """Whether ``window_id`` is the target, a window inside it, or (transitively) its transient."""
    from Xlib import error

    root_id = display.screen().root.id
    seen: set[int] = set()
    pending = [window_id]
    while pending:
        current = pending.pop()
        if current in seen or current in (0, root_id):
            continue
        seen.add(current)
        if current == target_id:
            return True
        window = _window(display, current)
        try:
            pending.append(getattr(window.query_tree().parent, "id", 0))
            transient = window.get_wm_transient_for()
        except error.XError:  # closed meanwhile: it is nobody's
            continue
        if transient is not None:
            pending.append(transient.id)
    return False


def _frame(display: Any, window_id: int) -> Any:
    """The top-level ancestor of a client (the window manager's frame, or the client itself)."""
    root_id = display.screen().root.id
    window = _window(display, window_id)
    while True:
        parent = window.query_tree().parent
        if getattr(parent, "id", root_id) == root_id:
            return window
        window = parent


def list_windows(display_name: str | None = None) -> list[WindowInfo]:
    """The top-level client windows of the display (``DISPLAY`` when None)."""
    display = _open(display_name)
    try:
        return _list(display)
    finally:
        display.close()


def _no_match(pattern: str, windows: list[WindowInfo]) -> str:
    if not windows:
        return f"no window matches --window {quoted(pattern)}: no windows are open on this display"
    listing = "".join(f"\n  {w.label()}" for w in windows)
    return (
        f"no window matches --window {quoted(pattern)}. The open windows:{listing}\n"
        "Pick one with a part of its class (--window class:NAME), of its title (--window 'title:TEXT') "
        "or its id (--window id:0x...)"
    )


class WindowScope:
    """One application window that a run is limited to; resolved when made.

    ``window`` is the WindowInfo found at start; ``notice`` says which window was taken
    when the pattern matched several (None otherwise). Holds an X connection: ``close()``.
    """

    def __init__(self, pattern: str, display_name: str | None = None) -> None:
        self.pattern = pattern
        self.display_name = display_name
        self.notice: str | None = None
        self._display = _open(display_name)
        try:
            windows = _list(self._display)
            matches = match_windows(pattern, windows)
            if not matches:
                raise UsageError(_no_match(pattern, windows))
            self.window = self._choose(matches)
            self._x_window = _window(self._display, self.window.id)
            self.rect_screen()  # fails now if it is minimised or on another desktop
        except BaseException:
            self._display.close()
            raise

    def _choose(self, matches: list[WindowInfo]) -> WindowInfo:
        if len(matches) == 1:
            return matches[0]
        active = _active(self._display)
        chosen = next((w for w in matches if active is not None and _belongs(self._display, active, w.id)), None)
        which = "the active one"
        if chosen is None:
            order = {window_id: index for index, window_id in enumerate(_clients(self._display, stacking=True))}
            chosen = max(matches, key=lambda w: order.get(w.id, -1))
            which = "the topmost one"
        others = "".join(f"\n  {w.label()}" for w in matches if w is not chosen)
        self.notice = (
            f"{len(matches)} windows match --window {quoted(self.pattern)}; using {which}: {chosen.label()}\n"
            f"The others:{others}\nPick another with --window id:0x..."
        )
        return chosen

    def name(self) -> str:
        """The window's title (its class when untitled), quoted and printable, for messages."""
        return quoted(self.window.title or ".".join(self.window.wm_class), TITLE_LIMIT)

    def describe(self) -> dict[str, Any]:
        """What the recording's header keeps: the pattern and the window it selected."""
        return {
            "pattern": self.pattern,
            "id": self.window.id,
            "wm_class": list(self.window.wm_class),
            "title": self.window.title,
            "rect": list(self.rect_screen()),
        }

    def rect_screen(self) -> tuple[int, int, int, int]:
        """The window's left, top, width, height now, in screen space.

        Raises DisplayError when the window was closed, or is unmapped (minimised, on another desktop).
        """
        from Xlib import error

        try:
            hidden = self._display.get_atom("_NET_WM_STATE_HIDDEN")
            if not _viewable(self._x_window) or hidden in (_ids(self._display, self._x_window, "_NET_WM_STATE") or ()):
                raise DisplayError(
                    f"the window {self.name()} is not visible (minimised, unmapped or on another desktop): "
                    "bring it back and run again"
                )
            return _rect(self._display, self._x_window)
        except error.XError:
            raise DisplayError(f"the window {self.name()} (id {self.window.id:#x}) was closed") from None

    def screen(self, monitor: int = 1) -> WindowScreen:
        """A Screen capturing only this window's area of ``monitor`` (1 = the first one)."""
        return WindowScreen(self, monitor)

    def refuse(self, kind: str, points_screen: list[tuple[int, int]]) -> str | None:
        """Why an action must not run in this scope, or None when it may.

        Pointing actions: every point inside the window's current rectangle and not under
        another (non-transient) window. ``key`` and ``type``: only while the window, a
        window inside it or its transient (a dialog) is the active one.
        """
        if kind in NO_INPUT_KINDS:
            return None
        left, top, width, height = self.rect_screen()  # DisplayError if the window is gone
        if kind in KEYBOARD_KINDS:
            active = _active(self._display)
            if active is not None and _belongs(self._display, active, self.window.id):
                return None
            return (
                f"refused: {kind} would go to {self._describe_active(active)}, not to the window {self.name()}: "
                "click inside the window first to give it the focus"
            )
        if not points_screen:
            return f"refused: {kind} has no point to check against the window {self.name()}"
        for x_screen, y_screen in points_screen:
            if not (left <= x_screen < left + width and top <= y_screen < top + height):
                return (
                    f"refused: ({x_screen}, {y_screen}) is outside the window {self.name()} "
                    f"({left}, {top}, {width} x {height})"
                )
            cover = self._covering(x_screen, y_screen)
            if cover is not None:
                return (
                    f"refused: ({x_screen}, {y_screen}) is covered by the window {cover}, which lies over {self.name()}"
                )
        return None

    def _describe_active(self, active: int | None) -> str:
        from Xlib import error

        if active is None:
            return "no window (nothing has the focus)"
        try:
            title = _title(self._display, _window(self._display, active))
        except error.XError:
            title = ""
        return f"the window {quoted(title, TITLE_LIMIT)}" if title else f"window {active:#x}"

    def _covering(self, x_screen: int, y_screen: int) -> str | None:
        """The title of a visible client window above the target at this point, or None."""
        from Xlib import error

        stack = _clients(self._display, stacking=True)
        if self.window.id not in stack:
            return None
        for window_id in stack[stack.index(self.window.id) + 1 :]:
            try:
                if _belongs(self._display, window_id, self.window.id):
                    continue
                frame = _frame(self._display, window_id)
                if not _viewable(frame):
                    continue
                g = frame.get_geometry()
                border = 2 * g.border_width
                if g.x <= x_screen < g.x + g.width + border and g.y <= y_screen < g.y + g.height + border:
                    return quoted(_title(self._display, _window(self._display, window_id)) or f"{window_id:#x}")
            except error.XError:  # closed meanwhile
                continue
        return None

    def close(self) -> None:
        self._display.close()

    def __enter__(self) -> WindowScope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WindowScreen:
    """Captures of one window's area (clipped to one monitor) with mss.

    Each capture re-reads where the window is, so a moved window is followed. The
    Screenshot's ``monitor`` geometry is the captured area: its origin is the window's
    (visible) top-left corner in screen space, its size the image's, so grounding a
    model-space point through it lands inside the window.
    """

    def __init__(self, scope: WindowScope, monitor: int = 1) -> None:
        try:
            import mss
        except ImportError as exc:  # pragma: no cover - mss is a dependency
            raise DisplayError(f"mss is not installed: {exc}") from None
        self.scope = scope
        options = {"display": scope.display_name} if scope.display_name else {}
        try:
            self._grabber = (getattr(mss, "MSS", None) or mss.mss)(**options)  # mss 10 renamed the class
            monitors = self._grabber.monitors
        except Exception as exc:  # mss raises ScreenShotError and friends
            raise DisplayError(f"cannot open the display for capture ({exc}): is DISPLAY right?") from None
        if not 0 <= monitor < len(monitors):
            self._grabber.close()
            raise DisplayError(
                f"monitor {monitor} does not exist: this desktop has {len(monitors) - 1} monitor(s), "
                f"numbered 1-{len(monitors) - 1} (0 = all of them together)"
            )
        self.monitor_index = monitor
        self._monitor_region = dict(monitors[monitor])

    def _grab(self) -> tuple[Image.Image, dict[str, int]]:
        left, top, width, height = self.scope.rect_screen()
        m = self._monitor_region
        x1, y1 = max(left, m["left"]), max(top, m["top"])
        x2 = min(left + width, m["left"] + m["width"])
        y2 = min(top + height, m["top"] + m["height"])
        if x2 <= x1 or y2 <= y1:
            raise DisplayError(
                f"the window {self.scope.name()} ({left}, {top}, {width} x {height}) is not on monitor "
                f"{self.monitor_index}: move it there, or choose its monitor with --monitor"
            )
        region = {"left": x1, "top": y1, "width": x2 - x1, "height": y2 - y1}
        raw = self._grabber.grab(region)
        return Image.frombytes("RGB", raw.size, raw.raw, "raw", "BGRX"), region

    def capture(self) -> Screenshot:
        image, region = self._grab()
        scale = image.width / region["width"]  # image pixels per screen unit (1.0 on X11)
        geometry = MonitorGeometry(region["left"], region["top"], image.width, image.height, scale)
        return Screenshot(image, geometry)

    def thumbnail(self) -> Image.Image:
        """A small grayscale image of the window's area: the settle check's probe."""
        return thumbnail(self._grab()[0])

    def close(self) -> None:
        self._grabber.close()
