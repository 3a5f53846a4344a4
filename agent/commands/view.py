"""``deskpilot view RECORDING``: write the recording's self-contained report.html (agent.report)."""

from __future__ import annotations

import argparse

from agent.commands.common import Console
from agent.errors import EXIT_DONE
from agent.report import write_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recording", help="a recording folder")
    p.add_argument(
        "--link-images",
        action="store_true",
        help="refer to the screenshots in screens/ instead of embedding them (smaller page)",
    )
    p.add_argument("--out", metavar="FILE", help="where to write the page (default: RECORDING/report.html)")


def cmd_view(args: argparse.Namespace, console: Console) -> int:
    out = write_report(args.recording, args.link_images, out=args.out)
    console.say(f"deskpilot view: wrote {out}")
    return EXIT_DONE
