"""The ``deskpilot`` command line: run, replay, view. Turns errors into exit codes.

Exit codes (also in ``--help`` and the README):
  0   the model declared the task done (replay: everything matched)
  1   the model declared the task infeasible, or a budget (steps, time, cost) ran out
      (replay: a step differed)
  2   usage or configuration error (bad flags, missing key, no display, bad recording)
  3   the model endpoint failed (key rejected, unreachable after retries, HTTP error)
  4   internal error (a bug in deskpilot; set DESKPILOT_DEBUG=1 for the traceback)
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from agent import __version__
from agent.argtypes import nonneg_float, nonneg_int, positive_float, positive_int
from agent.config import DEFAULT_IMAGE_TOKENS, PROVIDERS, Settings
from agent.errors import EXIT_DONE, EXIT_INTERRUPTED, EXIT_NOT_DONE, EXIT_USAGE, DeskpilotError
from agent.safety import (
    DEFAULT_ALWAYS_CONFIRM,
    DEFAULT_KILL_HOTKEY,
    Approver,
    KillSwitch,
    Secrets,
    SecretTypingExecutor,
    describe_hotkey,
)
from agent.trajectory import Step

EXIT_INTERNAL = 4
# Modules that add a subcommand: each has register(commands), adding a parser whose
# func(args) returns an exit code (and raises DeskpilotError for errors).
COMMAND_MODULES: tuple[str, ...] = ("agent.replay", "agent.report", "agent.bench")
EXIT_CODES_HELP = """exit codes:
  0    the model declared the task done
  1    the model declared it infeasible, or a step/time/cost budget ran out
  2    usage or configuration error (bad flags, missing key, no display)
  3    the model endpoint failed (key rejected, unreachable after retries)
  4    internal error (a bug: set DESKPILOT_DEBUG=1 for the traceback)
  130  interrupted (Ctrl-C)
"""
STATUS_EXIT = {
    "done": EXIT_DONE,
    "fail": EXIT_NOT_DONE,
    "max_steps": EXIT_NOT_DONE,
    "max_time": EXIT_NOT_DONE,
    "max_cost": EXIT_NOT_DONE,
    "interrupted": EXIT_INTERRUPTED,
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code is 2 as well
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"deskpilot: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="deskpilot",
        description="A desktop agent that operates your computer with GLM-4.5V. "
        "Stop a run by pressing Esc 3 times in any window, with Ctrl-C, or by throwing the mouse into a "
        "screen corner.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"deskpilot {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="perform a task on the desktop",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("task", help="what to do, in plain words")
    model = run.add_argument_group("model")
    model.add_argument(
        "--provider",
        choices=list(PROVIDERS),
        default="siliconflow",
        help="provider preset: base URL, model id, thinking switch, key variable (default: siliconflow)",
    )
    model.add_argument("--base-url", help="OpenAI-compatible base URL (overrides the preset)")
    model.add_argument("--model", help="model id (overrides the preset)")
    model.add_argument(
        "--api-key",
        help="API key (default: DESKPILOT_API_KEY, then the provider's own variable such as SILICONFLOW_API_KEY)",
    )
    model.add_argument(
        "--thinking",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let the model think before answering (slower, costlier; default: off, "
        "on when --thinking-budget is given)",
    )
    model.add_argument(
        "--thinking-budget",
        type=positive_int,
        metavar="N",
        help="thinking token budget, for SiliconFlow (128-32768) and OpenRouter",
    )
    model.add_argument(
        "--protocol",
        choices=["auto", "tools", "text"],
        default="auto",
        help="auto: send tools and accept every text shape; tools: tool calling; "
        "text: the trained text format only (default: auto)",
    )
    model.add_argument(
        "--max-image-tokens",
        type=positive_int,
        default=DEFAULT_IMAGE_TOKENS,
        metavar="N",
        help=f"downscale screenshots to cost at most N visual tokens (default: {DEFAULT_IMAGE_TOKENS})",
    )
    model.add_argument(
        "--image-encoding",
        default="jpeg:90",
        metavar="ENC",
        help="how screenshots are sent: jpeg[:QUALITY] or png[:LEVEL] (default: jpeg:90); "
        "recordings always keep the lossless capture",
    )
    model.add_argument(
        "--history-images",
        type=nonneg_int,
        default=4,
        metavar="N",
        help="earlier screenshots sent at half size (default: 4)",
    )
    where = run.add_argument_group("screen and input")
    where.add_argument(
        "--monitor",
        type=nonneg_int,
        default=1,
        metavar="N",
        help="monitor to capture and act on, mss numbering: 1 = first (default: 1)",
    )
    where.add_argument("--dry-run", action="store_true", help="send no input events at all")
    where.add_argument(
        "--screens",
        metavar="PATH",
        help="mocked screens: one PNG, or a folder of PNGs in name order (implies --dry-run)",
    )
    where.add_argument(
        "--settle-max",
        type=positive_float,
        default=2.0,
        metavar="SECONDS",
        help="after each action, wait at most this long for the screen to stop changing (default: 2.0)",
    )
    where.add_argument(
        "--settle-quiet",
        type=positive_float,
        default=0.08,
        metavar="SECONDS",
        help="the screen counts as settled once unchanged this long (default: 0.08)",
    )
    model.add_argument(
        "--retries",
        type=nonneg_int,
        default=4,
        metavar="N",
        help="retries of a failed request (connection error, timeout, 429, 5xx) with exponential backoff (default: 4)",
    )
    model.add_argument(
        "--timeout",
        type=positive_float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for the model's reply (default: 120)",
    )
    model.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait to connect to the endpoint (default: 10)",
    )
    limits = run.add_argument_group("limits and output")
    limits.add_argument("--max-steps", type=positive_int, default=30, metavar="N", help="step budget (default: 30)")
    limits.add_argument("--max-time", type=positive_float, metavar="SECONDS", help="time budget")
    limits.add_argument("--max-cost", type=positive_float, metavar="USD", help="cost budget (estimated)")
    limits.add_argument(
        "--price-in",
        type=nonneg_float,
        metavar="USD",
        help="price per million input tokens for cost estimates (default: the provider's)",
    )
    limits.add_argument(
        "--price-out",
        type=nonneg_float,
        metavar="USD",
        help="price per million output tokens (default: the provider's)",
    )
    safety = run.add_argument_group("safety")
    safety.add_argument(
        "--kill-hotkey",
        default=DEFAULT_KILL_HOTKEY,
        metavar="KEYS",
        help="global hotkey that stops the run from any window: KEY*N (a key pressed "
        f"N times within 1.5 s) or a combo like ctrl+alt+q (default: {DEFAULT_KILL_HOTKEY})",
    )
    safety.add_argument("--confirm", action="store_true", help="ask approve / skip / edit / quit before every action")
    safety.add_argument(
        "--always-confirm",
        default=",".join(DEFAULT_ALWAYS_CONFIRM),
        metavar="COMBOS",
        help="key combinations that always need approval, comma-separated (default: %(default)s)",
    )
    limits.add_argument(
        "--recordings", default="recordings", metavar="DIR", help="where runs are recorded (default: ./recordings)"
    )
    run.set_defaults(func=cmd_run)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def step_line(step: Step) -> str:
    """One line per step: number, action, target description, pixel target, latency."""
    action = step.action or {}
    kind = action.get("kind", "-")
    detail = (
        action.get("element_info")
        or action.get("keys")
        or action.get("content")
        or action.get("answer")
        or action.get("reason")
        or ""
    )
    detail = f" {detail[:40]!r}" if detail else ""
    where = ""
    if step.targets:
        where = " -> " + " -> ".join(f"({t.point_screen[0]}, {t.point_screen[1]})" for t in step.targets)
    retries = f"  [{len(step.attempts) - 1} retries]" if len(step.attempts) > 1 else ""
    tokens = step.prompt_tokens + step.completion_tokens
    usage = f"  {tokens:,} tok" + (f" ${step.cost_usd:.4f}" if step.cost_usd else "") if tokens else ""
    error = f"  ! {step.error}" if step.error else ""
    return f"step {step.step:>3}  {kind}{detail}{where}  {step.timings.model_s:.2f}s{usage}{retries}{error}"


def cmd_run(args: argparse.Namespace) -> int:
    from actions.executor import DryRunExecutor
    from agent.capture import ImageScreen, MssScreen
    from agent.display import display_warning
    from agent.loop import Limits, run_episode
    from agent.planner import GLMPlanner
    from agent.settle import AdaptiveSettle, SettleConfig
    from agent.trajectory import JsonlRecorder

    settings = Settings.resolve(
        args.provider,
        base_url=args.base_url,
        model=args.model,
        api_key=args.api_key,
        thinking=args.thinking if args.thinking is not None else args.thinking_budget is not None,
        thinking_budget=args.thinking_budget,
        protocol=args.protocol,
        monitor=args.monitor,
        max_steps=args.max_steps,
        max_image_tokens=args.max_image_tokens,
        history_images=args.history_images,
        max_retries=args.retries,
        read_timeout=args.timeout,
        connect_timeout=args.connect_timeout,
        image_encoding=args.image_encoding,
        price_in=args.price_in,
        price_out=args.price_out,
    )
    key = [settings.api_key.get_secret_value()] if settings.api_key else []
    secrets = Secrets.from_task(args.task, extra=key)
    _SCRUB.append(secrets.scrub)
    dry_run = args.dry_run or args.screens is not None
    screen = ImageScreen(args.screens) if args.screens else MssScreen(args.monitor)
    kill_switch = live_executor = None
    if args.screens is None:
        kill_switch = KillSwitch(args.kill_hotkey).start()
    if dry_run:
        executor = DryRunExecutor(log=lambda line: print(line, flush=True))
    else:
        from actions.pyautogui_executor import PyAutoGuiExecutor

        stop = kill_switch.stop_event.is_set if kill_switch else None
        live_executor = PyAutoGuiExecutor(should_stop=stop)
        executor = SecretTypingExecutor(live_executor, secrets)
    approve = Approver(args.confirm, _split(args.always_confirm))
    planner = GLMPlanner(settings, stop_event=kill_switch.stop_event if kill_switch else None)
    limits = Limits(max_steps=args.max_steps, max_time_s=args.max_time, max_cost_usd=args.max_cost)
    recorder = JsonlRecorder(
        args.recordings,
        args.task,
        {**settings.public(), "model_retries": limits.model_retries},
        mode="dry-run" if dry_run else "run",
        scrub=secrets.scrub,
    )
    print(
        f"deskpilot: {settings.provider} {settings.model}, {'dry run' if dry_run else 'live'}; "
        f"recording to {recorder.path}",
        flush=True,
    )
    warning = display_warning() if args.screens is None else None
    if warning:
        print(f"deskpilot: warning: {warning}", file=sys.stderr, flush=True)
    if kill_switch is not None:
        print(
            f"deskpilot: stop with {describe_hotkey(args.kill_hotkey)} (in any window), Ctrl-C here, "
            "or throw the mouse into a screen corner",
            flush=True,
        )
    try:
        result = run_episode(
            args.task,
            screen=screen,
            planner=planner,
            executor=executor,
            settings=settings,
            limits=limits,
            recorder=recorder,
            on_step=lambda s: print(secrets.scrub(step_line(s)), flush=True),
            stop_event=kill_switch.stop_event if kill_switch else None,
            approve=approve,
            settle=None
            if dry_run
            else AdaptiveSettle.for_screen(screen, SettleConfig(quiet_s=args.settle_quiet, max_s=args.settle_max)),
        )
    finally:
        if kill_switch is not None:
            kill_switch.stop()
        if live_executor is not None:
            live_executor.close()  # undo the keymap bindings made for typing
        planner.close()
        print(f"deskpilot: recording in {recorder.path}", flush=True)
    outcome = result.outcome
    cost = f", ${outcome.cost_usd:.4f}" if outcome.cost_usd else ""
    print(
        f"deskpilot: {outcome.status} after {outcome.steps} steps, {outcome.duration_s:.1f}s, "
        f"{outcome.prompt_tokens + outcome.completion_tokens:,} tokens{cost}: {secrets.scrub(outcome.message)}"
    )
    if outcome.answer:
        print(f"answer: {secrets.scrub(outcome.answer)}")
    return STATUS_EXIT.get(outcome.status, EXIT_NOT_DONE)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


_SCRUB: list = []  # secret scrubbers of the running command, applied to error messages


def _scrub(text: str) -> str:
    for scrub in _SCRUB:
        text = scrub(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except DeskpilotError as exc:
        label = "stopped" if exc.exit_code == EXIT_INTERRUPTED else "error"
        print(f"deskpilot: {label}: {_scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("deskpilot: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so without a wall of traceback
        if os.environ.get("DESKPILOT_DEBUG"):
            raise
        print(
            f"deskpilot: internal error: {type(exc).__name__}: {_scrub(str(exc))} "
            "(set DESKPILOT_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
