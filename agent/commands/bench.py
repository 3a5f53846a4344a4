"""``deskpilot bench``: what everything around the model costs, each figure beside a baseline
(the measurements are in ``agent.bench``; this prints them and writes --json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.bench import OPTIONS, add_arguments, format_table, run_bench
from agent.commands.common import Console
from agent.errors import EXIT_DONE, EXIT_NOT_DONE, UsageError

__all__ = ["add_arguments", "cmd_bench"]


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    result = run_bench(
        **{name: getattr(args, name) for name in OPTIONS},
        log=lambda line: console.say(f"deskpilot bench: {line}", err=True),
    )
    for line in format_table(result).splitlines():
        console.say(line)
    for name, text in result["profiles"].items():
        console.say("")
        console.say(f"cProfile, {name}:")
        for line in text.splitlines():
            console.say(line)
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {args.json}: {exc.strerror or exc}") from None
    missed = [row for row in result["rows"] if row.get("met") is False]
    if args.check and missed:
        for row in missed:
            console.say(
                f"deskpilot bench: missed target: {row['id']} ({row['metric']}, {row['case']}: "
                f"{row['ours']} against target {row['target']})",
                err=True,
            )
        return EXIT_NOT_DONE
    return EXIT_DONE  # without --check a missed target is a finding, shown in the table
