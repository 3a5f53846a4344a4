"""``deskpilot record``: record a person's demonstration as a recording (``agent.demonstration``).

Opens the monitor's rolling capture and the input listener (``agent.listen``), prints a
``ready`` line once both run, then one line per recorded action. The kill hotkey, Ctrl-C,
SIGTERM and SIGHUP end the recording cleanly (outcome ``done``, "recorded N actions", exit 0);
a second Ctrl-C while a ``--describe`` request is under way interrupts it (exit 130).
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from actions.executor import describe
from actions.schema import ACTION_ADAPTER
from agent.argtypes import nonneg_int
from agent.capture import MssScreen
from agent.commands.common import Console, add_model_arguments, settings_from_args
from agent.demonstration import Demonstrator, ModelDescriber, RollingCapture, StopRequest, kill_hotkey_keys
from agent.display import display_warning
from agent.errors import EXIT_DONE
from agent.listen import start_source
from agent.safety import DEFAULT_KILL_HOTKEY, Secrets, describe_hotkey
from agent.trajectory import JsonlRecorder, Step

DEFAULT_TASK = "recorded demonstration"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task",
        default=DEFAULT_TASK,
        metavar="TEXT",
        help=f"what the demonstration does, in plain words (default: {DEFAULT_TASK!r})",
    )
    p.add_argument(
        "--monitor",
        type=nonneg_int,
        default=1,
        metavar="N",
        help="monitor to record, mss numbering: 1 = first (default: 1)",
    )
    p.add_argument(
        "--window",
        metavar="PATTERN",
        help="record only one application window, by class or title (class:NAME, title:TEXT, id:0x...): "
        "screenshots show only it; clicks outside it and keys while another window has the focus are left out",
    )
    p.add_argument(
        "--recordings", default="recordings", metavar="DIR", help="where to write the recording (default: ./recordings)"
    )
    p.add_argument(
        "--kill-hotkey",
        default=DEFAULT_KILL_HOTKEY,
        metavar="KEYS",
        help=f"the hotkey that ends the recording from any window, not recorded itself (default: {DEFAULT_KILL_HOTKEY})",
    )
    p.add_argument(
        "--mask-typing",
        action="store_true",
        help="record each typed text as a {{secret:TYPED_N}} placeholder, never the text "
        "(replay then types the value of DESKPILOT_SECRET_TYPED_N)",
    )
    p.add_argument(
        "--describe",
        action="store_true",
        help="ask the model what each clicked element is (one request per target) and record it as element_info",
    )
    add_model_arguments(p)


@contextmanager
def _stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP ask the recording to stop; a second Ctrl-C interrupts at once."""
    names = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        which = signal.Signals(signum)
        stop.set(names.get(which, which.name), interrupt=which == signal.SIGINT)

    saved = {sig: signal.signal(sig, handler) for sig in names}
    try:
        yield
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)


def step_line(step: Step) -> str:
    """One line per recorded action: its number, what it does and where, how long it took."""
    action = ACTION_ADAPTER.validate_python(step.action)
    what = describe(action, [t.point_screen for t in step.targets], limit=60)
    took = f"  {step.timings.execute_s:.2f}s" if step.timings.execute_s >= 0.01 else ""
    return f"step {step.step:>3}  {what}{took}"


def cmd_record(args: argparse.Namespace, console: Console) -> int:
    monitor = args.monitor
    kill_hotkey_keys(args.kill_hotkey)  # a bad one is a usage error before anything starts
    with ExitStack() as stack:
        describer = None
        public: dict[str, Any] = {"monitor": monitor, "kill_hotkey": args.kill_hotkey, "mask_typing": args.mask_typing}
        if args.describe:
            from agent.planner import GLMPlanner

            settings = settings_from_args(args, monitor=monitor)
            key = [settings.api_key.get_secret_value()] if settings.api_key else []
            scrub = Secrets({}, extra=key).scrub
            console.scrub = scrub
            planner = GLMPlanner(settings, scrub=scrub)
            stack.callback(planner.close)
            describer = ModelDescriber(planner, settings)
            public = {**settings.public(), **public}
        public["describe"] = args.describe
        scope = None
        if args.window:
            from agent.window import WindowScope

            scope = WindowScope(args.window)
            stack.callback(scope.close)
            if scope.notice:
                console.say(f"deskpilot record: {scope.notice}")
        capture = RollingCapture(lambda: MssScreen(monitor)).start()
        stack.callback(capture.close)
        recorder = JsonlRecorder(
            args.recordings, args.task, public, mode="human", window=scope.describe() if scope else None
        )
        demonstrator = Demonstrator(
            capture,
            recorder,
            kill_hotkey=args.kill_hotkey,
            mask_typing=args.mask_typing,
            describe=describer,
            scope=scope,
            on_step=lambda step: console.say(step_line(step)),
            on_left_out=lambda why: console.say(f"deskpilot record: left out {why}"),
        )
        source = start_source(demonstrator.feed)
        stack.callback(source.close)
        warning = display_warning()
        if warning:
            console.say(f"deskpilot record: warning: {warning}", err=True)
        where = f"window {scope.name()}" if scope else f"monitor {monitor}"
        console.say(
            f"deskpilot record: ready: recording {where} to {recorder.path}; stop with "
            f"{describe_hotkey(args.kill_hotkey)} (in any window) or Ctrl-C here"
        )
        stop = StopRequest()
        with _stop_on_signals(stop):
            outcome = demonstrator.run(stop, close_input=source.close)
    left_out = f" ({demonstrator.left_out} left out)" if demonstrator.left_out else ""
    console.say(f"deskpilot record: {outcome.message}{left_out}, in {outcome.duration_s:.1f}s: {recorder.path}")
    return EXIT_DONE
