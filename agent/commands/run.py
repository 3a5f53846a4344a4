"""``deskpilot run TASK``: perform a task on the desktop (or on mocked screens, dry).

A thin layer over the Python API (``agent.api``): the flags become ``Options`` (one field per
flag, same names), an ``Agent`` builds and owns the seams, and each step is printed as a
line through the ``Console``, or with ``--json`` written as one JSON object (the recording's
step schema) per line on stdout, then the outcome, while the lines for a person go to
stderr. SIGTERM and SIGHUP end a run like Ctrl-C: the outcome is written and the exit code
is 130.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from actions.executor import describe
from actions.schema import ACTION_ADAPTER
from agent.api import Agent, Options
from agent.argtypes import nonneg_float, nonneg_int, positive_float, positive_int
from agent.commands.common import Console, add_model_arguments
from agent.errors import EXIT_DONE, EXIT_INTERRUPTED, EXIT_NOT_DONE, DeskpilotError, Interrupted
from agent.loop import EpisodeResult
from agent.safety import DEFAULT_ALWAYS_CONFIRM, DEFAULT_KILL_HOTKEY, DEFAULT_TAKEOVER_HOTKEY, Approver
from agent.trajectory import Step
from agent.zoom import ZOOM_MODES

STATUS_EXIT = {
    "done": EXIT_DONE,
    "fail": EXIT_NOT_DONE,
    "max_steps": EXIT_NOT_DONE,
    "max_time": EXIT_NOT_DONE,
    "max_cost": EXIT_NOT_DONE,
    "stuck": EXIT_NOT_DONE,
    "interrupted": EXIT_INTERRUPTED,
}


def add_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("task", help="what to do, in plain words")
    add_session_arguments(run)
    asking = run.add_argument_group("asking you")
    asking.add_argument("--confirm", action="store_true", help="ask approve / skip / edit / quit before every action")
    asking.add_argument(
        "--no-ask",
        action="store_true",
        help="do not offer the model call_user (asking you a question); if it asks anyway the run ends as "
        "failed, the question its reason. Without a terminal on stdin this is the default",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="write one JSON object per step (the recording's step fields) and a final outcome object "
        "to stdout, as JSON Lines; the lines for a person go to stderr",
    )


def add_session_arguments(run: argparse.ArgumentParser) -> None:
    """The flags of a run that ``deskpilot mcp`` shares: model, screen and input, limits, safety."""
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
    where.add_argument(
        "--zoom",
        choices=ZOOM_MODES,
        default="auto",
        help="re-ground a click on a zoomed-in crop around the model's first answer: auto (when the target "
        "is likely too small for it: a small box, a screen sent shrunk, or the same click changed nothing), "
        "always, off (default: auto)",
    )
    limits = run.add_argument_group("limits and output")
    limits.add_argument(
        "--max-steps", type=positive_int, default=30, metavar="N", help="step budget (default: %(default)s)"
    )
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
        "--always-confirm",
        default=",".join(DEFAULT_ALWAYS_CONFIRM),
        metavar="COMBOS",
        help="key combinations that always need approval, comma-separated; any combination holding "
        "one of them asks too (default: %(default)s)",
    )


def step_line(step: Step, scrub: Callable[[str], str] | None = None) -> str:
    """One line per step: number, what the action does and where, latency, tokens, retries, zoom,
    whether the screen changed, a loop, problems."""
    if step.action is not None:
        action = ACTION_ADAPTER.validate_python(step.action)
        what = describe(action, [t.point_screen for t in step.targets], limit=60, scrub=scrub)
    else:
        what = "-"
    flags = f"  [{len(step.attempts) - 1} retries]" if len(step.attempts) > 1 else ""
    if step.zoom is not None:
        flags += "  [zoomed in]" if step.zoom.used else "  [zoom answer not used]"
    tokens = step.prompt_tokens + step.completion_tokens
    usage = f"  {tokens:,} tok" + (f" ${step.cost_usd:.4f}" if step.cost_usd else "") if tokens else ""
    note = f"  ({step.note})" if step.note else ""
    if step.screen_changed is False:
        note += "  (the screen did not change)"
    if step.loop is not None:
        note += f"  loop: {step.loop.message} [{step.loop.response}]"
    error = f"  ! {step.error}" if step.error else ""
    return f"step {step.step:>3}  {what}  {step.timings.model_s:.2f}s{usage}{flags}  {timing_note(step)}{note}{error}"


def timing_note(step: Step) -> str:
    """The step's time outside the model, as its recording's ``timings`` hold it, e.g.
    ``[see 0+12ms settled, act 31ms, settle 110ms]``: capture + prepare of the screenshot (and
    where the frame came from), waiting for the recorder's queue, the action and the settle."""
    t = step.timings

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.0f}"

    parts = [f"see {ms(t.capture_s)}+{ms(t.prepare_s)}ms" + (" settled" if t.frame == "settle" else "")]
    if t.record_wait_s >= 0.001:
        parts.append(f"queue {ms(t.record_wait_s)}ms")
    if t.execute_s or t.settle_s:
        parts += [f"act {ms(t.execute_s)}ms", f"settle {ms(t.settle_s)}ms"]
    return "[" + ", ".join(parts) + "]"


def ask_when_stuck(console: Console) -> Callable[[Step, str], str | None]:
    """The run's ``Recovery.on_stuck``: when a loop outlasted telling the model and zooming in,
    ask the person what to do; their words go to the model (empty, or Ctrl-D: end ``stuck``)."""

    def on_stuck(step: Step, message: str) -> str | None:
        answer = console.ask(
            f"{message}. What should it do instead? (your answer goes to the model; Enter alone or Ctrl-D "
            "ends the run as stuck)",
            who=f"stuck at step {step.step}",
        )
        return answer.strip() or None if answer is not None else None

    return on_stuck


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


def options_from_args(args: argparse.Namespace) -> Options:
    """The API's Options from the parsed flags (an Options field is the flag of the same name)."""
    return Options.make(**{name: getattr(args, name) for name in Options.model_fields if hasattr(args, name)})


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    console.json = args.json
    with Agent(options_from_args(args)) as agent:
        secrets = agent.secrets(args.task)
        console.scrub = secrets.scrub
        if not args.json:
            agent.planner.on_text = console.status  # the thought as it streams (drawn on a terminal only)
        recorder = agent.recorder(args.task, secrets.scrub)
        path = recorder.path if recorder is not None else None
        settings, scope = agent.settings, agent.scope
        console.say(
            f"deskpilot: {settings.provider} {settings.model}, {'dry run' if agent.dry_run else 'live'}"
            f"{f', window {scope.name()}' if scope else ''}; " + (f"recording to {path}" if path else "not recorded")
        )
        # in JSON mode stdout holds JSON only: the approval prompt goes to stderr
        approve = (
            Approver(args.confirm, args.always_confirm, stdout=sys.stderr, scrub=secrets.scrub) if args.json else None
        )
        can_ask = not args.no_ask and sys.stdin.isatty()
        if not args.no_ask and not can_ask:
            console.say("deskpilot: stdin is not a terminal: the model cannot ask you questions (as with --no-ask)")

        def on_step(step: Step) -> None:
            console.say(step_line(step, secrets.scrub))
            if args.json:
                console.emit("step", step.model_dump(mode="json"))

        try:
            with _signals_interrupt():
                result = agent.run(
                    args.task,
                    on_step=on_step,
                    approve=approve,
                    ask=console.ask if can_ask else None,
                    on_stuck=ask_when_stuck(console) if can_ask else None,
                    recorder=recorder,
                )
        except DeskpilotError as exc:
            if args.json and isinstance(exc.result, EpisodeResult):
                _emit_outcome(console, exc.result, exc.exit_code)
            raise
        finally:
            if path is not None:
                console.say(f"deskpilot: recording in {path}")
    outcome = result.outcome
    cost = f", ${outcome.cost_usd:.4f}" if outcome.cost_usd else ""
    console.say(
        f"deskpilot: {outcome.status} after {outcome.steps} steps, {outcome.duration_s:.1f}s, "
        f"{outcome.prompt_tokens + outcome.completion_tokens:,} tokens{cost}: {outcome.message}"
    )
    if outcome.answer:
        console.say(f"answer: {outcome.answer}")
    code = STATUS_EXIT.get(outcome.status, EXIT_NOT_DONE)
    if args.json:
        _emit_outcome(console, result, code)
    return code


def _emit_outcome(console: Console, result: EpisodeResult, exit_code: int) -> None:
    recording = str(result.recording) if isinstance(result.recording, Path) else None
    console.emit("outcome", {**result.outcome.model_dump(mode="json"), "recording": recording, "exit_code": exit_code})
