"""The ``deskpilot bench`` subcommand: its parser (``add_arguments``), the run, the table and
any cProfile text printed to stdout, progress lines to stderr, ``--json PATH`` written. The
only module of the package that prints; it belongs with the other commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.bench import OPTIONS, add_arguments, format_table, run_bench
from agent.errors import EXIT_DONE, UsageError


def register(commands: Any) -> None:
    """Add ``bench`` to the subparsers ``commands``."""
    parser = commands.add_parser(
        "bench",
        help="measure perception, settle, tokens, replay and step overhead",
        description="Measure what everything around the model costs (perception, settle, "
        "tokens, replay check, memory, step overhead), each figure beside a "
        "baseline measured in the same run. Takes about 1-2 minutes.",
    )
    add_arguments(parser)
    parser.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    result = run_bench(
        **{name: getattr(args, name) for name in OPTIONS},
        log=lambda line: print(f"deskpilot bench: {line}", file=sys.stderr, flush=True),
    )
    print(format_table(result))
    for name, text in result["profiles"].items():
        print(f"\ncProfile, {name}:\n{text}")
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {args.json}: {exc.strerror or exc}") from None
    return EXIT_DONE  # a missed target is a finding, shown in the table, not a failure
