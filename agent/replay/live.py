"""Replaying a recording on the live desktop without the model: ``execute``, and ``--heal``.

The recorded actions are performed again. Before each pointing step the live screen is
compared with the recorded screenshot around the target (``patch_difference``); on a
mismatch both crops are saved into ``<recording>/replay/`` and replay stops, or with
``--heal`` the model is asked to find the recorded element on the live screen
(``ModelHealer``, through the same retry path as a run) and replay goes on with its point.
Every action passes the same gates as in a run (a recording can be edited): a window scope
recorded in the header, and the approval gate for risky key combinations. The recorded pause
between an action and the next capture is honoured, scaled by ``speed`` and capped by
``max_wait``.

The screen comparison: a square patch of ``PATCH_SCREEN`` screen units (times the
monitor's scale) centred on the target is cut from both images, each is shrunk by area
averaging to ``GRID`` x ``GRID`` RGB cells, and the score is the mean absolute difference
of the cells over 255: 0 for identical patches, 1 for black against white. Averaging
8x8-pixel cells makes a blinking text cursor or a clock's changing digits move the score
by well under 0.01, while another widget, another colour or a window moved by a few
dozen pixels scores 0.1 and more. ``threshold`` (default ``THRESHOLD``) sets the limit;
the live screen is polled for up to ``settle`` seconds before it counts as different.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageStat

from actions.executor import PointScreen, describe
from actions.schema import ACTION_ADAPTER, Action
from agent.capture import Screenshot
from agent.config import Settings
from agent.errors import Interrupted, InvalidArguments
from agent.geometry import Target, image_to_screen
from agent.grounding import Grounded, ask, ground_action
from agent.image import prepare_for_model
from agent.loop import Approve, Refuse
from agent.planner import Planner
from agent.protocol import StepRequest
from agent.replay.offline import Difference, executed
from agent.text import printable
from agent.trajectory import Recording, Step

PATCH_SCREEN = 160  # side of the compared square, in screen units
GRID = 20  # the patch is shrunk to GRID x GRID cells before comparing
THRESHOLD = 0.08

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
    """Recorded pause between the end of the previous step's action and this step's start
    (replay spends the action's own time performing it again)."""
    t = previous.timings
    acted = previous.started_at + t.capture_s + t.model_s + t.execute_s
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
        approve: Approve | None = None,
        refuse: Refuse | None = None,
        threshold: float = THRESHOLD,
        speed: float = 1.0,
        max_wait: float = 5.0,
        settle: float = 2.0,
        log: Callable[[str], None] = print,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rec, self.screen, self.executor, self.healer = recording, screen, executor, healer
        self.approve, self.refuse = approve, refuse
        self.threshold, self.speed, self.max_wait, self.settle = threshold, speed, max_wait, settle
        self.log, self.sleep = log, sleep
        self.out = recording.path / "replay"
        self.current = 0  # the step being replayed
        self.performed = 0  # actions performed
        self.healed: list[int] = []  # steps whose target the model found again

    def run(self) -> list[Difference]:
        previous: Step | None = None
        for step in self.rec.steps:
            if not executed(step):
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
            gated = self._gate(step, action, points)
            if isinstance(gated, Difference):
                return [gated]
            if gated is None:
                continue
            action, points = gated
            self.executor.execute(action, points)
            self.performed += 1
            self.log(f"step {step.step}: {describe(action, points)}{how}")
        return []

    def _gate(
        self, step: Step, action: Action, points: list[PointScreen]
    ) -> tuple[Action, list[PointScreen]] | Difference | None:
        """The same gates as a run: the window scope, then the approval prompt (risky key
        combinations always ask). Returns what to perform, a Difference that stops replay
        (refused), or None (skipped)."""
        if self.refuse is not None and (reason := self.refuse(action, points)) is not None:
            return Difference(step.step, reason)
        if self.approve is None:
            return action, points
        decision = self.approve(action, points)
        if decision.verdict == "quit":
            raise Interrupted("stopped at the approval prompt")
        if decision.verdict == "skip" or decision.action is None:
            self.log(f"step {step.step}: skipped at the approval prompt")
            return None
        if decision.action != action:  # edited: its points are thousandths of the live screen
            action = decision.action
            points = [t.point_screen for t in ground_action(action, self.screen.capture().monitor)]
            if self.refuse is not None and (reason := self.refuse(action, points)) is not None:
                return Difference(step.step, reason)
        return action, points

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
        return [image_to_screen(t.point_image, monitor) for t in targets]

    def _save(self, step: Step, compared: Compared) -> tuple[Path, Path]:
        self.out.mkdir(exist_ok=True)
        paths = (self.out / f"step-{step.step:04d}-recorded.png", self.out / f"step-{step.step:04d}-live.png")
        compared.recorded.save(paths[0])
        compared.live.save(paths[1])
        return paths


class ModelHealer:
    """Asks the model where the recorded element is on the live screen (``--heal``)."""

    def __init__(self, planner: Planner, settings: Settings, task: str, attempts: int = 3) -> None:
        self.planner, self.settings, self.task, self.attempts = planner, settings, task, attempts

    def __call__(self, step: Step, action: Action, shot: Screenshot) -> list[tuple[int, int]]:
        sent = prepare_for_model(shot.image, self.settings.max_image_tokens, self.settings.image_encoding)
        what = getattr(action, "element_info", "") or step.thought or "the element it acted on"
        task = (
            f"{self.task}\n\nThis step is being replayed and the screen has changed since it was "
            f"recorded. Do the recorded action again on the same element at its position on the "
            f"current screenshot: {step.action_text}. The element: {what}."
        )

        def request(feedback: str | None, no_thinking: bool) -> StepRequest:
            return StepRequest(task, step.step, sent, [], list(step.memory_in), feedback, no_thinking)

        def same_shape(grounded: Grounded) -> None:
            if len(grounded.targets) != len(step.targets):
                raise InvalidArguments(f"give a {action.kind} with {len(step.targets)} point(s), as recorded")

        grounded, feedback = ask(self.planner, request, shot.monitor, self.attempts, check=same_shape)
        if grounded is None:
            raise HealFailed(f"the model did not re-locate {printable(what, 80)!r} ({feedback})")
        return [t.point_screen for t in grounded.targets]


class HealFailed(Exception):
    """The model could not find the recorded element on the live screen."""
