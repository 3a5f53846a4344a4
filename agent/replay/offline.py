"""Replaying a recording without a display: ``check`` and ``simulate``.

* ``check`` (no display, no model): every recorded reply is interpreted again with today's
  parser and grounded again with the recorded geometry (``agent.grounding.interpret``, the
  same function a run uses). A reply recorded as rejected must still be rejected; the
  accepted one must give the same action and the same targets. A step that zoomed in
  re-grounds its zoom reply through the recorded crop (``interpret(raw, geometry, crop)``):
  it must give the point the step acted on, and the first reply the recorded first
  targets. Each differing step is reported as a ``Difference``.
* ``simulate``: the whole loop (``run_episode``) with the recorded screenshots as mocked
  screens (``ImageScreen``), the recorded replies (every attempt, in order) as a
  ``ScriptedPlanner``, and the ``DryRunExecutor``; the performed actions must come out the
  same, step by step. Decisions recorded at the approval prompt (skip, edit, quit),
  refusals of a ``--window`` scope, the person's answers to call_user and their takeovers
  (human steps, with the screenshots before and after) are replayed too, and so are the
  recorded progress checks (whether each action changed the screen) and the person's answer
  when the run was stuck, with the recorded ``--zoom`` mode, so zoom requests and loop
  escalations happen where they did.

A recording made from a person (``deskpilot record``, ``Step.by_person``) has no replies to
parse again. ``check`` judges what it does hold with today's code: the action must still
validate and be written the same way (``action_to_call``), a key combination must still
parse in the key vocabulary, and each target must convert as the recorder converted it
(screen -> image pixels -> thousandths). ``simulate`` does that, then performs the recorded
actions with the dry-run executor through the path ``--mode execute`` takes
(``LiveReplayer``), on the recorded screenshots, and the actions must come out as recorded.

``find_recordings`` lists the recordings under a folder, at any depth, and ``replay_offline``
runs one of the two modes: ``deskpilot replay DIR`` and the pytest plugin use them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from actions.executor import DryRunExecutor, Performed
from actions.keys import held_keys
from actions.schema import ACTION_ADAPTER, ASK_KIND, TERMINAL_KINDS, Action, action_to_call
from agent.capture import ImageScreen, Screenshot
from agent.config import Settings
from agent.errors import EndpointError, Interrupted, InvalidArguments, ModelError, UsageError
from agent.geometry import Target, image_to_model, screen_to_image
from agent.grounding import interpret
from agent.loop import Limits, Recovery, run_episode
from agent.planner import ScriptedPlanner
from agent.protocol import RawReply
from agent.safety import Decision
from agent.text import quoted
from agent.trajectory import Recording, Step
from agent.zoom import ZOOM_MODES, check_zoom_answer

MODES = ("check", "simulate")


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
    found: list[Difference] = []
    for step in recording.steps:
        if step.by_person:
            found.extend(_check_by_person(step))
            continue
        edited = step.decision == "edit"
        first_targets = step.zoom.first if step.zoom is not None else step.targets
        for number, attempt in enumerate(step.attempts, start=1):
            label = f"reply {number}" if len(step.attempts) > 1 else "the reply"
            raw = RawReply.model_validate(attempt.raw)
            try:
                parsed = interpret(raw, step.geometry)
                targets = list(parsed.targets)
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
                    step.action, step.action_text, first_targets, parsed.action.model_dump(mode="json"), now, targets
                )
                if what:
                    found.append(Difference(step.step, what))
        if step.zoom is not None:
            found += _check_zoom(step)
    return found


def _check_zoom(step: Step) -> list[Difference]:
    """Re-ground the step's zoom reply through the recorded crop."""
    zoom = step.zoom
    assert zoom is not None
    found = []
    for attempt in zoom.attempts:
        raw = RawReply.model_validate(attempt.raw)
        try:
            grounded = interpret(raw, step.geometry, zoom.crop_image)
            check_zoom_answer(grounded)
        except ModelError as exc:
            if attempt.error is None:
                found.append(
                    Difference(step.step, f"the zoom reply was accepted, now rejected: {type(exc).__name__}: {exc}")
                )
            continue
        except Exception as exc:
            found.append(Difference(step.step, f"the zoom reply: the parser raised {type(exc).__name__}: {exc}"))
            continue
        if attempt.error is not None:
            found.append(Difference(step.step, f"the zoom reply was rejected ({attempt.error_type}), now accepted"))
        elif zoom.used and step.decision != "edit" and [grounded.targets[0]] != step.targets:
            found.append(
                Difference(
                    step.step, f"zoomed target was {_points(step.targets)}, now {_points([grounded.targets[0]])}"
                )
            )
    return found


def _check_by_person(step: Step) -> list[Difference]:
    """A person's step: its action, its keys and its targets judged with today's code."""
    try:
        action = ACTION_ADAPTER.validate_python(step.action)
    except (ValueError, ModelError) as exc:  # pydantic's ValidationError is a ValueError
        return [
            Difference(step.step, f"the recorded action {step.action_text or step.action} no longer validates: {exc}")
        ]
    found = []
    now = action_to_call(action)
    if now != step.action_text:
        found.append(Difference(step.step, f"action was written {step.action_text}, now {now}"))
    if action.kind == "key":
        try:
            held_keys(action.keys)
        except InvalidArguments as exc:
            found.append(
                Difference(step.step, f"the keys {quoted(action.keys)} are no longer a key combination: {exc}")
            )
    boxes = [list(box) for box in (getattr(action, "start_box", None), getattr(action, "end_box", None)) if box]
    if boxes != [list(t.box_model) for t in step.targets]:
        found.append(Difference(step.step, f"the action points at {boxes}, its targets are {_points(step.targets)}"))
    for target in step.targets:
        point_image = screen_to_image(target.point_screen, step.geometry)
        box_model = image_to_model(point_image, step.geometry.size_image)
        if (list(point_image), list(box_model)) != (list(target.point_image), list(target.box_model)):
            now_target = Target(box_model, point_image, target.point_screen)
            found.append(Difference(step.step, f"target was {_points([target])}, now {_points([now_target])}"))
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


def recorded_actions(recording: Recording) -> list[Performed]:
    """The actions the recorded run performed: not DONE/FAIL, not skipped at the approval prompt."""
    performed = []
    for step in recording.steps:
        if executed(step):
            action = step.action or {}
            performed.append(
                Performed(
                    step.step,
                    action["kind"],
                    tuple(t.point_screen for t in step.targets),
                    action.get("content") or action.get("keys"),
                )
            )
    return performed


def executed(step: Step) -> bool:
    """Whether the recorded run performed (or started to perform) the step's action."""
    return (
        step.action is not None
        and step.action.get("kind") not in TERMINAL_KINDS
        and step.action.get("kind") != ASK_KIND  # a question to the person presses nothing
        and step.decision not in ("skip", "quit", "refused")
    )


def simulate(recording: Recording) -> list[Difference]:
    """Run the loop on the recorded screens and replies with the dry-run executor (a person's
    recording: perform its actions dry, see the module docstring)."""
    steps = recording.steps
    if not steps:
        return []
    if any(s.by_person for s in steps):
        return _simulate_by_person(recording)
    replies = [RawReply.model_validate(a.raw) for s in steps for a in s.attempts + (s.zoom.attempts if s.zoom else [])]
    planner = ScriptedPlanner(replies)
    first = steps[0].geometry
    screen = ImageScreen(
        [path for s in steps for path in recording.screenshot_paths(s)], origin=(first.left, first.top),
        scale=first.scale,
    )  # fmt: skip
    executor = DryRunExecutor()
    performed: list[Performed] = []
    simulated: list[Step] = []

    def on_step(step: Step) -> None:
        simulated.append(step)
        performed.extend(replace(e, step=step.step) for e in executor.performed)
        executor.performed.clear()

    found: list[Difference] = []
    gates = _RecordedGates(steps)
    try:
        result = run_episode(
            recording.header.task,
            screen=screen,
            planner=planner,
            executor=executor,
            settings=_settings(recording),
            on_step=on_step,
            limits=Limits(
                max_steps=sum(s.decision != "takeover" for s in steps), model_retries=_model_retries(recording)
            ),
            approve=gates.approve,
            refuse=gates.refuse,
            ask_user=gates.ask_user,
            takeover=_RecordedTakeover(steps, simulated),
            recovery=Recovery(
                zoom=_zoom_mode(recording),
                changed=lambda step: _recorded_change(steps, step.step),
                on_stuck=lambda step, message: _recorded_answer(steps, step.step),
            ),
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
                at = (a.step if a is not None else None) or (b.step if b is not None else None) or steps[-1].step
                found.append(Difference(at, f"performed {b or 'nothing'}, recorded {a or 'nothing'}"))
                break
    if planner.replies and not found:
        found.append(Difference(steps[-1].step, f"{len(planner.replies)} recorded replies were never asked for"))
    status = recording.outcome.status
    if result is not None and status in ("done", "fail", "stuck") and result.outcome.status != status and not found:
        found.append(Difference(steps[-1].step, f"outcome was {status}, now {result.outcome.status}"))
    return found


def _settings(recording: Recording) -> Settings:
    known = {k: v for k, v in recording.header.settings.items() if k in Settings.model_fields and k != "api_key"}
    known.setdefault("base_url", "http://localhost:8000/v1")
    known.setdefault("model", recording.header.model or "replay")
    try:
        return Settings.model_validate(known)
    except Exception as exc:
        raise UsageError(f"{recording.path / 'header.json'}: settings: {exc}") from None


def _zoom_mode(recording: Recording) -> Any:
    """The recorded run's --zoom mode. A recording without one was made before zooming
    existed (off), or by a caller of run_episode that did not record it (auto if it zoomed)."""
    mode = recording.header.settings.get("zoom")
    if mode in ZOOM_MODES:
        return mode
    return "auto" if any(s.zoom is not None for s in recording.steps) else "off"


def _recorded_change(steps: list[Step], number: int) -> float | None:
    """The recorded progress check of step ``number`` (None: not measured, or not recorded)."""
    return steps[number - 1].changed_fraction if 0 < number <= len(steps) else None


def _recorded_answer(steps: list[Step], number: int) -> str | None:
    """What the person said when the recorded run was stuck at step ``number`` (None: it ended)."""
    loop = steps[number - 1].loop if 0 < number <= len(steps) else None
    return loop.answer if loop is not None else None


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


class _RecordedGates:
    """The recorded run's gates, replayed in order: a refusal of the window scope, then the
    decision at the approval prompt (skip, edit, quit), for each step that had an action."""

    def __init__(self, steps: list[Step]) -> None:
        self._queue = [
            s for s in steps if s.action is not None and s.action.get("kind") not in (*TERMINAL_KINDS, ASK_KIND)
        ]
        self._current: Step | None = None
        self._answers = iter([s.user_answer for s in steps if (s.action or {}).get("kind") == ASK_KIND])

    def ask_user(self, question: str) -> str | None:
        """The person's recorded answers to call_user, in order."""
        return next(self._answers, None)

    def refuse(self, action: Action, points_screen: list) -> str | None:
        if self._current is not None:  # asked again for an edited action: it passed in the recording
            self._current = None
            return None
        self._current = self._queue.pop(0) if self._queue else None
        if self._current is not None and self._current.decision == "refused":
            note, self._current = self._current.note, None
            return note
        return None

    def approve(self, action: Action, points_screen: list) -> Decision:
        step, self._current = self._current, None
        if step is not None and step.decision in ("skip", "quit"):
            return Decision(step.decision)
        if step is not None and step.decision == "edit" and step.action is not None:
            self._current = step  # the loop asks the scope again about the edit
            return Decision("approve", ACTION_ADAPTER.validate_python(step.action))
        return Decision("approve", action)


@dataclass
class _RecordedTakeover:
    """The person takes over where the recording has a human step; the hold is instant."""

    steps: list[Step]
    simulated: list[Step]

    def requested(self) -> bool:
        done = len(self.simulated)
        return done < len(self.steps) and self.steps[done].decision == "takeover"

    def hold(self) -> None:
        pass


class _RecordedScreens:
    """The screenshot of the step being replayed, as the live screen (``step`` says which)."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self.steps = {s.step: s for s in recording.steps}
        self.step = lambda: recording.steps[0].step

    def capture(self) -> Screenshot:
        step = self.steps[self.step()]
        return Screenshot(self.recording.screenshot(step), step.geometry)


def _simulate_by_person(recording: Recording) -> list[Difference]:
    found = check(recording)
    if found:
        return found
    from agent.replay.live import LiveReplayer  # live builds on this module

    executor = DryRunExecutor()
    screens = _RecordedScreens(recording)
    replayer = LiveReplayer(recording, screens, executor, settle=0.0, sleep=lambda s: None, log=lambda line: None)
    screens.step = lambda: replayer.current
    try:
        found = replayer.run()
    except Exception as exc:  # what a regression test is for
        return [Difference(replayer.current, f"performing it raised {type(exc).__name__}: {exc}")]
    if found:
        return found
    expected, performed = recorded_actions(recording), executor.performed
    for i in range(max(len(expected), len(performed))):
        a = expected[i] if i < len(expected) else None
        b = performed[i] if i < len(performed) else None
        if (replace(a, step=None) if a else None) != b:
            where = (a or expected[-1]).step if expected else None
            return [Difference(where or 1, f"performed {b or 'nothing'}, recorded {a or 'nothing'}")]
    return []


def find_recordings(root: str | os.PathLike[str]) -> list[Path]:
    """The recording folders (those holding header.json) under ``root`` at any depth, in name
    order; a recording's own subfolders and hidden folders are not searched."""
    found = []
    for folder, subfolders, files in os.walk(root):
        if "header.json" in files:
            found.append(Path(folder))
            subfolders.clear()
        else:
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
    return sorted(found)


def replay_offline(recording: Recording, mode: str = "check") -> list[Difference]:
    """``check`` or ``simulate`` one recording; the differences (empty: it matches)."""
    if mode not in MODES:
        raise UsageError(f"unknown replay mode {mode!r} without a display: use {' or '.join(MODES)}")
    return check(recording) if mode == "check" else simulate(recording)
