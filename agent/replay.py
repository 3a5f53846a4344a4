"""``deskpilot replay``: a recording as a regression test, a dry loop, or a live macro.

Three modes, one recording:

* ``check`` (default; no display, no model): every recorded reply is parsed again with
  today's parser and grounded again with the recorded geometry. A reply recorded as
  rejected must still be rejected; the accepted one must give the same action and the
  same targets (model, image and screen space). Each differing step is reported.
* ``simulate``: the whole loop (``run_episode``) with the recorded screenshots as mocked
  screens (``ImageScreen``), the recorded replies, every attempt in order, as a
  ``ScriptedPlanner``, and the ``DryRunExecutor``; the executed actions must come out the
  same, step by step. Approval decisions recorded in ``Step.decision`` (skip, edit, quit) are
  replayed too.
* ``execute``: the recorded actions performed on the live desktop without the model.
  Before each pointing step the live screen is compared with the recorded screenshot
  around the target (``patch_difference``); on a mismatch both crops are saved into
  ``<recording>/replay/`` and replay stops (exit 1), or with ``--heal`` the model is asked
  to find the recorded element on the live screen and replay goes on with its point.
  The recorded pause between an action and the next capture is honoured, scaled by
  ``--speed`` and capped by ``--max-wait``.

The screen comparison: a square patch of ``PATCH_SCREEN`` screen units (times the
monitor's scale) centred on the target is cut from both images, each is shrunk by area
averaging to ``GRID`` x ``GRID`` RGB cells, and the score is the mean absolute difference
of the cells over 255: 0 for identical patches, 1 for black against white. Averaging
8x8-pixel cells makes a blinking text cursor or a clock's changing digits move the score
by well under 0.01, while another widget, another colour or a window moved by a few
dozen pixels scores 0.1 and more. ``--threshold`` (default ``THRESHOLD``) sets the limit;
the live screen is polled for up to ``--settle`` seconds before it counts as different.

Exit codes: 0 everything matched (or was healed), 1 a step differed, 2 bad recording or
usage, 3 the model endpoint failed (``--heal``), 130 interrupted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageStat

from actions.schema import ACTION_ADAPTER, TERMINAL_KINDS, Action, action_to_call
from agent.argtypes import nonneg_float, positive_float
from agent.errors import EXIT_DONE, EXIT_NOT_DONE, EndpointError, Interrupted, ModelError, UsageError
from agent.geometry import Target
from agent.trajectory import Recording, Step, load

PATCH_SCREEN = 160  # side of the compared square, in screen units
GRID = 20  # the patch is shrunk to GRID x GRID cells before comparing
THRESHOLD = 0.08
MODES = ("check", "simulate", "execute")
EXIT_CODES = """exit codes:
  0    every step matched (execute: every step was performed, healed or not)
  1    a step differed (the report names it)
  2    usage error or a bad recording (missing file, truncated line, unknown schema version,
       a screenshot that does not decode)
  3    the model endpoint failed (--heal)
  130  interrupted
"""


@dataclass(frozen=True)
class Difference:
    """One way a step came out differently from its recording."""

    step: int
    what: str

    def __str__(self) -> str:
        return f"step {self.step}: {self.what}"


# --- check -----------------------------------------------------------------------------


def check(recording: Recording) -> list[Difference]:
    """Re-parse and re-ground every recorded reply; return what differs (empty: all match)."""
    from agent.loop import ground_action
    from agent.parsing import parse_reply
    from agent.protocol import RawReply

    found: list[Difference] = []
    for step in recording.steps:
        edited = step.decision == "edit"
        for number, attempt in enumerate(step.attempts, start=1):
            label = f"reply {number}" if len(step.attempts) > 1 else "the reply"
            raw = RawReply.model_validate(attempt.raw)
            try:
                parsed = parse_reply(raw.content, raw.tool_calls, raw.reasoning)
                targets = ground_action(parsed.action, step.geometry)
            except ModelError as exc:
                if attempt.error is None:
                    found.append(
                        Difference(
                            step.step,
                            f"{label} was accepted as {step.action_text}, now rejected: {type(exc).__name__}: {exc}",
                        )
                    )
                continue
            except Exception as exc:  # the parser crashed: exactly what a regression test is for
                found.append(Difference(step.step, f"{label}: the parser raised {type(exc).__name__}: {exc}"))
                continue
            now = action_to_call(parsed.action)
            if attempt.error is not None:
                found.append(Difference(step.step, f"{label} was rejected ({attempt.error_type}), now parses as {now}"))
            elif edited:  # the recorded action is the user's edit: compare the model's own
                proposed = step.proposed_action
                if proposed is not None and proposed != parsed.action.model_dump(mode="json"):
                    found.append(
                        Difference(step.step, f"the model's action (edited by the user) was {proposed}, now {now}")
                    )
            else:
                what = _differs(
                    step.action, step.action_text, step.targets, parsed.action.model_dump(mode="json"), now, targets
                )
                if what:
                    found.append(Difference(step.step, what))
    return found


def _differs(
    action_a: dict | None,
    text_a: str,
    targets_a: list[Target],
    action_b: dict | None,
    text_b: str,
    targets_b: list[Target],
) -> str | None:
    """How two accepted actions differ: their kind or arguments first, else where they point."""
    boxes = ("start_box", "end_box")
    strip = lambda a: {k: v for k, v in a.items() if k not in boxes} if a else a
    if strip(action_a) != strip(action_b) or (targets_a == targets_b and action_a != action_b):
        return f"action was {text_a or 'none'}, now {text_b or 'none'}"
    if targets_a != targets_b:
        return f"target was {_points(targets_a)}, now {_points(targets_b)}"
    return None


def _points(targets: list[Target]) -> str:
    return (
        " -> ".join(f"{list(t.box_model)} = image {t.point_image} = screen {t.point_screen}" for t in targets) or "none"
    )


# --- simulate --------------------------------------------------------------------------


@dataclass(frozen=True)
class Performed:
    """An action as performed: kind, screen points, text typed or keys."""

    step: int
    kind: str
    points_screen: tuple[tuple[int, int], ...]
    text: str | None = None

    def __str__(self) -> str:
        where = " at " + " -> ".join(f"({x}, {y})" for x, y in self.points_screen) if self.points_screen else ""
        return f"{self.kind}{where}" + (f" {self.text!r}" if self.text else "")


def recorded_actions(recording: Recording) -> list[Performed]:
    """The actions the recorded run performed: not DONE/FAIL, not skipped at the approval prompt."""
    performed = []
    for step in recording.steps:
        if _executed(step):
            action = step.action or {}
            performed.append(
                Performed(
                    step.step,
                    action["kind"],
                    tuple(tuple(t.point_screen) for t in step.targets),
                    action.get("content") or action.get("keys"),
                )
            )
    return performed


def _executed(step: Step) -> bool:
    """Whether the recorded run performed (or started to perform) the step's action."""
    return (
        step.action is not None
        and step.action.get("kind") not in TERMINAL_KINDS
        and step.decision not in ("skip", "quit")
    )


def simulate(recording: Recording) -> list[Difference]:
    """Run the loop on the recorded screens and replies with the dry-run executor."""
    from actions.executor import DryRunExecutor
    from agent.capture import ImageScreen
    from agent.loop import Limits, run_episode
    from agent.planner import ScriptedPlanner
    from agent.protocol import RawReply

    steps = recording.steps
    if not steps:
        return []
    replies = [RawReply.model_validate(a.raw) for s in steps for a in s.attempts]
    planner = ScriptedPlanner(replies)
    first = steps[0].geometry
    screen = ImageScreen(recording.path / steps[0].screenshot, origin=(first.left, first.top), scale=first.scale)
    screen.files = [recording.path / s.screenshot for s in steps]
    executor = DryRunExecutor()
    performed: list[Performed] = []
    simulated: list[Step] = []

    def on_step(step: Step) -> None:
        simulated.append(step)
        performed.extend(Performed(step.step, e.kind, e.points_screen, e.text) for e in executor.performed)
        executor.performed.clear()

    found: list[Difference] = []
    try:
        result = run_episode(
            recording.header.task,
            screen=screen,
            planner=planner,
            executor=executor,
            settings=_settings(recording),
            on_step=on_step,
            limits=Limits(max_steps=len(steps), model_retries=_model_retries(recording)),
            approve=_recorded_decisions(steps),
        )
    except EndpointError:  # the scripted planner ran out of recorded replies
        at = simulated[-1].step + 1 if simulated else 1
        found.append(Difference(at, "the simulated run asked the model more often than the recorded one"))
        result = None
    except Interrupted:  # a recorded "quit" at the approval prompt ends the simulation the same way
        result = None
    for before, after in zip(steps, simulated):
        what = _differs(
            before.action, before.action_text, before.targets, after.action, after.action_text, after.targets
        )
        if what:
            found.append(Difference(before.step, what))
    expected = recorded_actions(recording)
    if performed != expected and not found:
        for i in range(max(len(performed), len(expected))):
            a = expected[i] if i < len(expected) else None
            b = performed[i] if i < len(performed) else None
            if a != b:
                found.append(Difference((a or b).step, f"performed {b or 'nothing'}, recorded {a or 'nothing'}"))
                break
    if planner.replies and not found:
        found.append(Difference(steps[-1].step, f"{len(planner.replies)} recorded replies were never asked for"))
    status = recording.outcome.status
    if result is not None and status in ("done", "fail") and result.outcome.status != status and not found:
        found.append(Difference(steps[-1].step, f"outcome was {status}, now {result.outcome.status}"))
    return found


def _settings(recording: Recording):
    from agent.config import Settings

    known = {k: v for k, v in recording.header.settings.items() if k in Settings.model_fields and k != "api_key"}
    known.setdefault("base_url", "http://localhost:8000/v1")
    known.setdefault("model", recording.header.model or "replay")
    try:
        return Settings.model_validate(known)
    except Exception as exc:
        raise UsageError(f"{recording.path / 'header.json'}: settings: {exc}") from None


def _model_retries(recording: Recording) -> int:
    """The recorded run's retry budget: from the header, else worked out from the steps
    (a step with no usable reply used all of it)."""
    recorded = recording.header.settings.get("model_retries")
    if isinstance(recorded, int):
        return recorded
    steps = recording.steps
    exhausted = [len(s.attempts) - 1 for s in steps if s.attempts and all(a.error for a in s.attempts)]
    if exhausted:
        return max(exhausted)
    return max([2] + [len(s.attempts) - 1 for s in steps])


def _recorded_decisions(steps: list[Step]) -> Callable[[Action, str], Any]:
    """An approver that gives, in order, the decisions recorded at the approval prompt."""
    from agent.safety import Decision

    decisions = []
    for step in steps:
        if step.action is None or step.action.get("kind") in TERMINAL_KINDS:
            continue
        if step.decision in ("skip", "quit"):
            decisions.append(Decision(step.decision))
        elif step.decision == "edit":
            decisions.append(Decision("approve", ACTION_ADAPTER.validate_python(step.action)))
        else:
            decisions.append(None)

    def approve(action: Action, description: str) -> Any:
        decision = decisions.pop(0) if decisions else None
        return decision or Decision("approve", action)

    return approve


# --- execute ---------------------------------------------------------------------------


def crop_around(image: Image.Image, point_image: tuple[int, int] | list[int], side: int) -> Image.Image:
    """The ``side`` x ``side`` square centred on a point, shifted to stay inside the image."""
    side = max(8, min(side, image.width, image.height))
    left = min(max(0, int(point_image[0]) - side // 2), image.width - side)
    top = min(max(0, int(point_image[1]) - side // 2), image.height - side)
    return image.crop((left, top, left + side, top + side))


def patch_difference(recorded: Image.Image, live: Image.Image) -> float:
    """0 (same) to 1 (black vs white): mean absolute difference of GRID x GRID averaged RGB cells."""
    cells = [img.convert("RGB").resize((GRID, GRID), Image.Resampling.BOX) for img in (recorded, live)]
    return round(sum(ImageStat.Stat(ImageChops.difference(*cells)).mean) / 3 / 255, 4)


@dataclass
class Compared:
    score: float
    recorded: Image.Image
    live: Image.Image


def compare_at(recorded: Image.Image, live: Image.Image, targets: list[Target], scale: float) -> Compared:
    """The worst patch difference over a step's targets (1.0 if the screens differ in size)."""
    side = int(round(PATCH_SCREEN * scale))
    worst: Compared | None = None
    for target in targets:
        a, b = crop_around(recorded, target.point_image, side), crop_around(live, target.point_image, side)
        score = 1.0 if recorded.size != live.size else patch_difference(a, b)
        if worst is None or score > worst.score:
            worst = Compared(score, a, b)
    assert worst is not None
    return worst


def settle_gap(previous: Step, step: Step) -> float:
    """Recorded time between the previous step's action and this step's capture."""
    acted = previous.started_at + previous.timings.capture_s + previous.timings.model_s
    return max(0.0, step.started_at - acted)


class LiveReplayer:
    """Performs a recording's actions on the live desktop (see the module docstring)."""

    def __init__(
        self,
        recording: Recording,
        screen: Any,
        executor: Any,
        *,
        healer: Any = None,
        threshold: float = THRESHOLD,
        speed: float = 1.0,
        max_wait: float = 5.0,
        settle: float = 2.0,
        log: Callable[[str], None] = print,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rec, self.screen, self.executor, self.healer = recording, screen, executor, healer
        self.threshold, self.speed, self.max_wait, self.settle = threshold, speed, max_wait, settle
        self.log, self.sleep = log, sleep
        self.out = recording.path / "replay"
        self.current = 0  # the step being replayed
        self.performed = 0  # actions performed
        self.healed: list[int] = []  # steps whose target the model found again

    def run(self) -> list[Difference]:
        previous: Step | None = None
        for step in self.rec.steps:
            if not _executed(step):
                continue
            self.current = step.step
            if previous is not None:
                self.sleep(min(self.max_wait, settle_gap(previous, step) / self.speed))
            previous = step
            action = ACTION_ADAPTER.validate_python(step.action)
            points = [t.point_screen for t in step.targets]
            how = ""
            if step.targets:
                shot, compared = self._look(step)
                points = self._live_points(step.targets, shot.monitor)
                how = f" (screen matched: {compared.score:.3f})"
                if compared.score > self.threshold:
                    saved = self._save(step, compared)
                    what = (
                        f"the live screen differs around the target ({compared.score:.3f} > threshold "
                        f"{self.threshold:g}); crops saved: {saved[0]} and {saved[1]}"
                    )
                    if self.healer is None:
                        return [Difference(step.step, what)]
                    self.log(f"step {step.step}: {what}; asking the model to find it again")
                    recorded = points
                    points = self.healer(step, action, shot)
                    self.healed.append(step.step)
                    how = " (healed; recorded at " + " -> ".join(f"({x}, {y})" for x, y in recorded) + ")"
            self.executor.execute(action, points)
            self.performed += 1
            where = " at " + " -> ".join(f"({x}, {y})" for x, y in points) if points else ""
            self.log(f"step {step.step}: {_describe(action)}{where}{how}")
        return []

    def _look(self, step: Step):
        """Capture until the screen matches around the target or ``settle`` seconds pass."""
        recorded = self.rec.screenshot(step)
        deadline = time.monotonic() + self.settle
        while True:
            shot = self.screen.capture()
            compared = compare_at(recorded, shot.image, step.targets, step.geometry.scale)
            if compared.score <= self.threshold or time.monotonic() >= deadline:
                return shot, compared
            self.sleep(0.2)

    @staticmethod
    def _live_points(targets: list[Target], monitor: Any) -> list[tuple[int, int]]:
        """The recorded image pixels on the live monitor (its origin and scale may differ)."""
        from agent.geometry import image_to_screen

        return [image_to_screen(t.point_image, monitor) for t in targets]

    def _save(self, step: Step, compared: Compared) -> tuple[Path, Path]:
        self.out.mkdir(exist_ok=True)
        paths = (self.out / f"step-{step.step:04d}-recorded.png", self.out / f"step-{step.step:04d}-live.png")
        compared.recorded.save(paths[0])
        compared.live.save(paths[1])
        return paths


def _describe(action: Action) -> str:
    detail = getattr(action, "element_info", "") or getattr(action, "content", "") or getattr(action, "keys", "")
    return f"{action.kind} {detail!r}" if detail else action.kind


class ModelHealer:
    """Asks the model where the recorded element is on the live screen (``--heal``)."""

    def __init__(self, planner: Any, settings: Any, task: str, attempts: int = 3) -> None:
        self.planner, self.settings, self.task, self.attempts = planner, settings, task, attempts

    def __call__(self, step: Step, action: Action, shot: Any) -> list[tuple[int, int]]:
        from agent.image import prepare_for_model
        from agent.loop import ground_action
        from agent.parsing import parse_reply
        from agent.protocol import StepRequest

        sent = prepare_for_model(shot.image, self.settings.max_image_tokens, self.settings.image_encoding)
        live = shot.monitor
        what = getattr(action, "element_info", "") or step.thought or "the element it acted on"
        task = (
            f"{self.task}\n\nThis step is being replayed and the screen has changed since it was "
            f"recorded. Do the recorded action again on the same element at its position on the "
            f"current screenshot: {step.action_text}. The element: {what}."
        )
        feedback = None
        for _ in range(self.attempts):
            reply = self.planner.decide(StepRequest(task, step.step, sent, [], list(step.memory_in), feedback)).raw
            try:
                parsed = parse_reply(reply.content, reply.tool_calls, reply.reasoning)
                targets = ground_action(parsed.action, live)
            except ModelError as exc:
                feedback = f"{type(exc).__name__}: {exc}"
                continue
            if len(targets) == len(step.targets):
                return [t.point_screen for t in targets]
            feedback = f"give a {action.kind} with {len(step.targets)} point(s), as recorded"
        raise _HealFailed(f"the model did not re-locate {what!r} ({feedback})")


class _HealFailed(Exception):
    pass


# --- the command -----------------------------------------------------------------------


def register(commands: Any) -> None:
    from agent.config import PROVIDERS

    p = commands.add_parser(
        "replay",
        help="replay a recording: check it, simulate it, or execute it without the model",
        description="Replay a recording. check: re-parse and re-ground every recorded reply (no display, "
        "no model). simulate: the loop on the recorded screens and replies, dry. execute: "
        "perform the recorded actions live, checking the screen before each pointing step.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recording", help="a recording folder (recordings/<time>-<task>)")
    p.add_argument("--mode", choices=MODES, default="check", help="default: check")
    live = p.add_argument_group("execute")
    live.add_argument(
        "--heal", action="store_true", help="when the screen differs, ask the model to find the recorded element again"
    )
    live.add_argument(
        "--speed",
        type=positive_float,
        default=1.0,
        metavar="X",
        help="replay the recorded pauses X times faster (default: 1)",
    )
    live.add_argument(
        "--max-wait",
        type=nonneg_float,
        default=5.0,
        metavar="SECONDS",
        help="longest pause between two actions (default: 5)",
    )
    live.add_argument(
        "--threshold",
        type=nonneg_float,
        default=THRESHOLD,
        metavar="SCORE",
        help=f"largest patch difference (0-1) still taken as the same screen (default: {THRESHOLD})",
    )
    live.add_argument(
        "--settle",
        type=nonneg_float,
        default=2.0,
        metavar="SECONDS",
        help="how long to wait for the screen to match before it counts as changed (default: 2)",
    )
    live.add_argument("--monitor", type=int, metavar="N", help="monitor to act on (default: the recorded one)")
    model = p.add_argument_group("model (--heal)")
    model.add_argument("--provider", choices=list(PROVIDERS), help="default: the recorded provider")
    model.add_argument("--base-url", help="OpenAI-compatible base URL (overrides the preset)")
    model.add_argument("--model", help="model id (overrides the preset)")
    model.add_argument("--api-key", help="API key (default: DESKPILOT_API_KEY, then the provider's variable)")
    model.add_argument("--protocol", choices=["auto", "tools", "text"], help="default: the recorded one")
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    recording = load(args.recording)
    n_replies = sum(len(s.attempts) for s in recording.steps)
    print(
        f"deskpilot replay ({args.mode}): {recording.path}: {recording.header.task!r}, "
        f"{len(recording.steps)} steps, {n_replies} replies, recorded outcome {recording.outcome.status}",
        flush=True,
    )
    if args.mode == "check":
        found = check(recording)
    elif args.mode == "simulate":
        found = simulate(recording)
    else:
        found, performed, healed = _execute(recording, args)
        if not found:
            note = f"; healed steps {', '.join(map(str, healed))}" if healed else ""
            print(f"deskpilot replay: performed {performed} recorded actions{note}")
            return EXIT_DONE
    for difference in found:
        print(f"DIFFERS {difference}")
    if found:
        steps = sorted({d.step for d in found})
        print(f"deskpilot replay: {len(steps)} step(s) differ: {', '.join(map(str, steps))}")
        return EXIT_NOT_DONE
    print(f"deskpilot replay: all {len(recording.steps)} steps match")
    return EXIT_DONE


def _execute(recording: Recording, args: argparse.Namespace) -> tuple[list[Difference], int, list[int]]:
    """Replay live; returns the differences, the number of actions performed, the healed steps."""
    from actions.pyautogui_executor import PyAutoGuiExecutor
    from agent.capture import MssScreen
    from agent.safety import DEFAULT_KILL_HOTKEY, KillSwitch, Secrets, SecretTypingExecutor

    monitor = args.monitor if args.monitor is not None else (recording.header.monitor_index or 1)
    screen = MssScreen(monitor)
    secrets = Secrets.from_task(recording.header.task)
    planner = healer = None
    if args.heal:
        from agent.planner import GLMPlanner

        settings = _heal_settings(recording, args)
        planner = GLMPlanner(settings)
        healer = ModelHealer(planner, settings, recording.header.task)
    kill_switch = KillSwitch(DEFAULT_KILL_HOTKEY).start()
    executor = SecretTypingExecutor(PyAutoGuiExecutor(should_stop=kill_switch.stop_event.is_set), secrets)
    print(
        f"deskpilot replay: stop with {DEFAULT_KILL_HOTKEY} (from any window), Ctrl-C here, "
        "or throw the mouse into a screen corner",
        flush=True,
    )
    replayer = LiveReplayer(
        recording,
        screen,
        executor,
        healer=healer,
        threshold=args.threshold,
        speed=args.speed,
        max_wait=args.max_wait,
        settle=args.settle,
        log=lambda line: print(secrets.scrub(line), flush=True),
    )
    try:
        found = replayer.run()
    except _HealFailed as exc:
        found = [Difference(replayer.current, str(exc))]
    finally:
        kill_switch.stop()
        if planner is not None:
            planner.close()
        screen.close()
    return found, replayer.performed, replayer.healed


def _heal_settings(recording: Recording, args: argparse.Namespace):
    from agent.config import Settings

    recorded = recording.header.settings
    provider = args.provider or recorded.get("provider") or "siliconflow"
    same = provider == recorded.get("provider")
    return Settings.resolve(
        provider,
        base_url=args.base_url or (recorded.get("base_url") if same else None),
        model=args.model or (recorded.get("model") if same else None),
        api_key=args.api_key,
        protocol=args.protocol or recorded.get("protocol"),
        thinking=recorded.get("thinking"),
        max_image_tokens=recorded.get("max_image_tokens"),
        image_encoding=recorded.get("image_encoding"),
    )
