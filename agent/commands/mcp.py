"""``deskpilot mcp``: serve the desktop to other agents over MCP (stdio), through deskpilot's gates.

Takes the flags of ``run`` (but no task, and no --confirm: stdin is the protocol, so there is
no one to ask) plus ``--allow-risky``. stdout carries only the protocol: every line for a
person goes to stderr. Without the MCP SDK installed it says how to install it (exit 2).
SIGTERM and SIGHUP end the session like the client leaving: its outcome is written.
"""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

from agent.api import Agent
from agent.commands.common import Console
from agent.commands.run import add_session_arguments, options_from_args
from agent.errors import EXIT_DONE

MCP_MAX_STEPS = 500


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_session_arguments(p)
    p.set_defaults(max_steps=MCP_MAX_STEPS)
    for action in p._actions:
        if action.dest == "max_steps":
            action.help = (
                "step budget of the session: every tool call is a step, a run_task one per step of its own "
                "(default: %(default)s)"
            )
    p.add_argument(
        "--allow-risky",
        action="store_true",
        help="allow the key combinations of --always-confirm (refused by default: there is no one to ask)",
    )


def cmd_mcp(args: argparse.Namespace, console: Console) -> int:
    from agent.mcp_server import require_sdk, serve

    console.json = True  # stdout is the MCP protocol: lines for a person go to stderr
    require_sdk()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per model request

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    with Agent(options_from_args(args)) as agent:
        console.scrub = agent.secrets("").scrub

        def ready(session: Any) -> None:
            where = f"recording to {session.recording.path}" if session.recording.path else "not recorded"
            console.say(
                f"deskpilot mcp: {agent.settings.provider} {agent.settings.model}, "
                f"{'dry run' if agent.dry_run else 'live'}; serving on stdio; {where}"
            )

        try:
            outcome = serve(agent, allow_risky=args.allow_risky, on_ready=ready)
        except KeyboardInterrupt:
            console.say("deskpilot mcp: stopped")
            return EXIT_DONE
    console.say(f"deskpilot mcp: session {outcome.status} after {outcome.steps} steps: {outcome.message}")
    return EXIT_DONE
