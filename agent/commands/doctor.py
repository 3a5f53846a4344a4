"""``deskpilot doctor [--json] [--endpoint]``: a report of this desktop (and endpoint) to paste into a bug.

The checks are ``agent.doctor``'s; this prints them, one line each with the fix under a
problem, or as JSON. Exit 0 when all is well, 1 when a problem was found.
"""

from __future__ import annotations

import argparse
import json

from agent import __version__
from agent.commands.common import Console, add_model_arguments, settings_from_args
from agent.config import Settings
from agent.doctor import diagnose
from agent.errors import EXIT_DONE, EXIT_NOT_DONE
from agent.safety import DEFAULT_KILL_HOTKEY, DEFAULT_TAKEOVER_HOTKEY, Secrets

MARK = {"ok": "ok", "problem": "PROBLEM", "info": "info", "skipped": "skipped"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--endpoint",
        action="store_true",
        help="also make one small request to the configured provider: key, model id, tools, and a one-image "
        "grounding round trip (costs about 1,500 tokens)",
    )
    p.add_argument(
        "--no-pointer", action="store_true", help="do not move the pointer to check where it lands on each monitor"
    )
    p.add_argument("--kill-hotkey", default=DEFAULT_KILL_HOTKEY, metavar="KEYS", help="the kill hotkey to try")
    p.add_argument(
        "--takeover-hotkey", default=DEFAULT_TAKEOVER_HOTKEY, metavar="KEYS", help="the takeover hotkey to try"
    )
    add_model_arguments(p)


def cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    def settings() -> Settings:
        resolved = settings_from_args(args)
        if resolved.api_key is not None:
            console.scrub = Secrets({}, extra=[resolved.api_key.get_secret_value()]).scrub
        return resolved

    report = diagnose(
        kill_hotkey=args.kill_hotkey,
        takeover_hotkey=args.takeover_hotkey,
        settings=settings,
        endpoint=args.endpoint,
        move_pointer=not args.no_pointer,
    )
    if args.json:
        for line in json.dumps({"deskpilot": __version__, **report.as_dict()}, indent=2).splitlines():
            console.say(line)
    else:
        data = report.as_dict()
        console.say(f"deskpilot doctor: deskpilot {__version__}, Python {data['python']}, {data['platform']}")
        for check in report.checks:
            console.say(f"{MARK[check.status]:<8} {check.name:<20} {check.summary}")
            if check.fix:
                console.say(f"{'':<8} {'':<20} fix: {check.fix}")
        problems = report.problems
        console.say(
            "deskpilot doctor: all well"
            if not problems
            else f"deskpilot doctor: {len(problems)} problem{'s' if len(problems) > 1 else ''}: "
            + ", ".join(c.name for c in problems)
        )
    return EXIT_NOT_DONE if report.problems else EXIT_DONE
