"""``deskpilot run TASK``: perform a task on the desktop (or on mocked screens, dry).

Builds the three seams (screen, planner, executor), the recorder and the hooks (kill hotkey,
takeover hotkey, approvals, window scope, settle, the model's questions) from the flags, runs ``agent.loop.run_episode`` and prints one
line per step through the ``Console``. SIGTERM and SIGHUP end a run like Ctrl-C: the outcome is
written and the exit code is 130.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from actions.executor import DryRunExecutor, Executor, describe
from actions.schema import ACTION_ADAPTER
from agent.argtypes import nonneg_float, nonneg_int, positive_float, positive_int
from agent.capture import ImageScreen, MssScreen, Screen
from agent.commands.common import Console, add_model_arguments, settings_from_args
from agent.display import display_warning
from agent.errors import EXIT_DONE, EXIT_INTERRUPTED, EXIT_NOT_DONE, Interrupted
from agent.loop import Limits, run_episode
from agent.planner import GLMPlanner
from agent.safety import (
    DEFAULT_ALWAYS_CONFIRM,
    DEFAULT_KILL_HOTKEY,
    DEFAULT_TAKEOVER_HOTKEY,
    Approver,
    KillSwitch,
    Secrets,
    SecretTypingExecutor,
    Takeover,
    describe_hotkey,
)
from agent.settle import AdaptiveSettle, SettleConfig
from agent.trajectory import JsonlRecorder, Step

STATUS_EXIT = {
    "done": EXIT_DONE,
    "fail": EXIT_NOT_DONE,
    "max_steps": EXIT_NOT_DONE,
    "max_time": EXIT_NOT_DONE,
    "max_cost": EXIT_NOT_DONE,
    "interrupted": EXIT_INTERRUPTED,
}


def add_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("task", help="what to do, in plain words")
    add_model_arguments(run)
    where = run.add_argument_group("screen and input")
    where.add_argument(
        "--monitor",
        type=nonneg_int,
        default=1,
        metavar="N",
        help="monitor to capture and act on, mss numbering: 1 = first (default: 1)",
    )
    where.add_argument(
        "--window",
        metavar="PATTERN",
        help="scope the run to one application window, by class or title (class:NAME, title:TEXT, id:0x...): "
        "only it is captured, clicks must fall inside it, keys and typing only go while it has focus",
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
    limits = run.add_argument_group("limits and output")
    limits.add_argument("--max-steps", type=positive_int, default=30, metavar="N", help="step budget (default: 30)")
    limits.add_argument(
        "--max-time", type=positive_float, metavar="SECONDS", help="time budget, a request in flight included"
    )
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
    limits.add_argument(
        "--recordings", default="recordings", metavar="DIR", help="where runs are recorded (default: ./recordings)"
    )
    safety = run.add_argument_group("safety")
    safety.add_argument(
        "--kill-hotkey",
        default=DEFAULT_KILL_HOTKEY,
        metavar="KEYS",
        help="global hotkey that stops the run from any window: KEY*N (a key pressed "
        f"N times within 1.5 s) or a combo like ctrl+alt+q (default: {DEFAULT_KILL_HOTKEY})",
    )
    safety.add_argument(
        "--takeover-hotkey",
        default=DEFAULT_TAKEOVER_HOTKEY,
        metavar="KEYS",
        help="global hotkey with which you take the desktop over after the current action, and hand it back "
        f"(press it again); 'none' turns it off (default: {DEFAULT_TAKEOVER_HOTKEY})",
    )
    safety.add_argument(
        "--no-ask",
        action="store_true",
        help="do not offer the model call_user (asking you a question); if it asks anyway the run ends as "
        "failed, the question its reason. Without a terminal on stdin this is the default",
    )
    safety.add_argument("--confirm", action="store_true", help="ask approve / skip / edit / quit before every action")
    safety.add_argument(
        "--always-confirm",
        default=",".join(DEFAULT_ALWAYS_CONFIRM),
        metavar="COMBOS",
        help="key combinations that always need approval, comma-separated; any combination holding "
        "one of them asks too (default: %(default)s)",
    )


def step_line(step: Step, scrub: Callable[[str], str] | None = None) -> str:
    """One line per step: number, what the action does and where, latency, tokens, retries, problems."""
    if step.action is not None:
        action = ACTION_ADAPTER.validate_python(step.action)
        what = describe(action, [t.point_screen for t in step.targets], limit=60, scrub=scrub)
    else:
        what = "-"
    retries = f"  [{len(step.attempts) - 1} retries]" if len(step.attempts) > 1 else ""
    tokens = step.prompt_tokens + step.completion_tokens
    usage = f"  {tokens:,} tok" + (f" ${step.cost_usd:.4f}" if step.cost_usd else "") if tokens else ""
    note = f"  ({step.note})" if step.note else ""
    error = f"  ! {step.error}" if step.error else ""
    return f"step {step.step:>3}  {what}  {step.timings.model_s:.2f}s{usage}{retries}{note}{error}"


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the run like Ctrl-C (the outcome is still written)."""

    def stop(signum: int, frame: Any) -> None:
        raise Interrupted(f"stopped by {signal.Signals(signum).name}")

    saved = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    settings = settings_from_args(
        args,
        monitor=args.monitor,
        max_steps=args.max_steps,
        price_in=args.price_in,
        price_out=args.price_out,
    )
    key = [settings.api_key.get_secret_value()] if settings.api_key else []
    secrets = Secrets.from_task(args.task, extra=key)
    console.scrub = secrets.scrub
    approve = Approver(args.confirm, args.always_confirm, scrub=secrets.scrub)
    dry_run = args.dry_run or args.screens is not None
    limits = Limits(max_steps=args.max_steps, max_time_s=args.max_time, max_cost_usd=args.max_cost)
    with ExitStack() as stack:
        scope = None
        screen: Screen
        if args.screens:
            screen = ImageScreen(args.screens)
        elif args.window:
            from agent.window import WindowScope

            scope = WindowScope(args.window)
            stack.callback(scope.close)
            if scope.notice:
                console.say(f"deskpilot: {scope.notice}")
            screen = scope.screen(args.monitor)
            stack.callback(screen.close)
        else:
            screen = MssScreen(args.monitor)
            stack.callback(screen.close)
        kill_switch = takeover = None
        if args.screens is None:
            kill_switch = KillSwitch(args.kill_hotkey).start()
            stack.callback(kill_switch.stop)
            if args.takeover_hotkey.strip().lower() != "none":
                takeover = Takeover(args.takeover_hotkey, say=console.say, stop_event=kill_switch.stop_event).start()
                stack.callback(takeover.stop)
        executor: Executor
        if dry_run:
            executor = DryRunExecutor(log=console.say)
        else:
            from actions.pyautogui_executor import PyAutoGuiExecutor

            live = PyAutoGuiExecutor(should_stop=kill_switch.stop_event.is_set if kill_switch else None)
            stack.callback(live.close)  # undo the keymap bindings made for typing
            executor = SecretTypingExecutor(live, secrets)
        stop_event = kill_switch.stop_event if kill_switch else None
        planner = GLMPlanner(settings, stop_event=stop_event, scrub=secrets.scrub, on_text=console.status)
        stack.callback(planner.close)
        public = {**settings.public(), "model_retries": limits.model_retries}
        recorder = JsonlRecorder(
            args.recordings,
            args.task,
            public,
            mode="dry-run" if dry_run else "run",
            scrub=secrets.scrub,
            window=scope.describe() if scope else None,
        )
        console.say(
            f"deskpilot: {settings.provider} {settings.model}, {'dry run' if dry_run else 'live'}"
            f"{f', window {scope.name()}' if scope else ''}; recording to {recorder.path}"
        )
        stack.callback(lambda: console.say(f"deskpilot: recording in {recorder.path}"))
        warning = display_warning() if args.screens is None else None
        if warning:
            console.say(f"deskpilot: warning: {warning}", err=True)
        if kill_switch is not None:
            console.say(
                f"deskpilot: stop with {describe_hotkey(args.kill_hotkey)} (in any window), Ctrl-C here, "
                "or throw the mouse into a screen corner"
            )
        if takeover is not None:
            hotkey = describe_hotkey(args.takeover_hotkey)
            console.say(
                f"deskpilot: take the desktop over with {hotkey} (in any window), {hotkey} again to hand it back"
            )
        can_ask = not args.no_ask and sys.stdin.isatty()
        if not args.no_ask and not can_ask:
            console.say("deskpilot: stdin is not a terminal: the model cannot ask you questions (as with --no-ask)")
        settle = None
        if not dry_run:
            settle = AdaptiveSettle.for_screen(screen, SettleConfig(quiet_s=args.settle_quiet, max_s=args.settle_max))
        with _signals_interrupt():
            result = run_episode(
                args.task,
                screen=screen,
                planner=planner,
                executor=executor,
                settings=settings,
                limits=limits,
                recorder=recorder,
                on_step=lambda step: console.say(step_line(step, secrets.scrub)),
                stop_event=stop_event,
                approve=approve,
                refuse=(lambda action, points: scope.refuse(action.kind, points)) if scope else None,
                settle=settle,
                ask_user=console.ask if can_ask else None,
                takeover=takeover,
            )
    outcome = result.outcome
    cost = f", ${outcome.cost_usd:.4f}" if outcome.cost_usd else ""
    console.say(
        f"deskpilot: {outcome.status} after {outcome.steps} steps, {outcome.duration_s:.1f}s, "
        f"{outcome.prompt_tokens + outcome.completion_tokens:,} tokens{cost}: {outcome.message}"
    )
    if outcome.answer:
        console.say(f"answer: {outcome.answer}")
    return STATUS_EXIT.get(outcome.status, EXIT_NOT_DONE)
