"""The ``deskpilot`` command line: one parser, one sub-command per module of ``agent.commands``.

``main`` turns every error into its documented exit code (``agent.errors.EXIT_CODES``) with a
one-line message that says what to do, and never a traceback (set DESKPILOT_DEBUG=1 for one).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from agent import __version__
from agent.commands import bench, doctor, mcp, record, replay, run, view
from agent.commands.common import Console, Parser
from agent.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, DeskpilotError

Command = Callable[[argparse.Namespace, Console], int]
COMMANDS: tuple[tuple[str, str, str, Callable[[argparse.ArgumentParser], None], Command], ...] = (
    ("run", "perform a task on the desktop", "Perform a task on the desktop with GLM-4.5V, step by step.",
     run.add_arguments, run.cmd_run),
    ("replay", "replay a recording: check it, simulate it, or execute it without the model",
     "Replay a recording. check: re-parse and re-ground every recorded reply (no display, no model). "
     "simulate: the loop on the recorded screens and replies, dry. execute: perform the recorded actions live, "
     "checking the screen before each pointing step.", replay.add_arguments, replay.cmd_replay),
    ("record", "record a person's demonstration: every click, drag, scroll, key and text, with screenshots",
     "Record what you do on one monitor (or in one window) as a recording that replay can check, simulate and "
     "execute. Stop with the kill hotkey (Esc 3 times by default) or Ctrl-C.", record.add_arguments,
     record.cmd_record),
    ("view", "write report.html into a recording: screenshots, clicks, thoughts, costs",
     "Write a self-contained report.html into the recording folder.", view.add_arguments, view.cmd_view),
    ("bench", "measure perception, settle, tokens, replay and step overhead",
     "Measure what everything around the model costs, each figure beside a baseline measured in the same run.",
     bench.add_arguments, bench.cmd_bench),
    ("doctor", "report this desktop's setup (and --endpoint) for a bug report",
     "Check what deskpilot finds on this desktop: session, monitors, scale, input libraries, keyboard, hotkeys, "
     "where the pointer lands; with --endpoint, one small request to the provider. Exit 0: all well; 1: problems.",
     doctor.add_arguments, doctor.cmd_doctor),
    ("mcp", "serve the desktop to other agents as an MCP server (stdio)",
     "Serve this desktop over the Model Context Protocol (stdio): screenshot, locate, click, double_click, "
     "right_click, drag, scroll, type_text, press_keys and run_task, through the same gates as a run; every call "
     "is recorded into one recording per session.", mcp.add_arguments, mcp.cmd_mcp),
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="deskpilot",
        description="A desktop agent that operates your computer with GLM-4.5V. Stop a run by pressing Esc 3 "
        "times in any window, with Ctrl-C, or by throwing the mouse into a screen corner.",
    )
    parser.add_argument("--version", action="version", version=f"deskpilot {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, short, description, add_arguments, func in COMMANDS:
        sub = commands.add_parser(name, help=short, description=description)
        add_arguments(sub)
        sub.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    console = Console()
    try:
        with console.logging():  # the API's notices (window chosen, how to stop, dry-run actions)
            return int(args.func(args, console))
    except DeskpilotError as exc:
        label = "stopped" if exc.exit_code == EXIT_INTERRUPTED else "error"
        console.say(f"deskpilot: {label}: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        console.say("deskpilot: interrupted", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (e.g. `deskpilot doctor | head`): not an error of ours
        sys.stderr.close()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so without a wall of traceback
        if os.environ.get("DESKPILOT_DEBUG"):
            raise
        console.say(
            f"deskpilot: internal error: {type(exc).__name__}: {exc} "
            "(set DESKPILOT_DEBUG=1 for the traceback, and please report it)",
            err=True,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
