"""The one loop: perceive, decide, zoom, gate, act, progress, record. Runs, dry runs and replays all use it.

``run_episode`` runs steps until the model says DONE or FAIL, a budget runs out, or the run is
interrupted. A step is a short sequence of named phases over one ``Run`` (the running state:
settings, limits, history, memory, totals, recorder, hooks)::

    perceive  capture the screen, prepare the image the model sees, save the lossless shot
    decide    ask the planner until a reply is usable (agent.grounding.ask: parse + ground,
              a model error is shown back to the model at most ``Limits.model_retries`` times);
              a streamed reply's action goes through gate and act (in ``Run.actor``) the moment
              it is complete, while the rest of the reply arrives; the step waits for both
    zoom      a pointing target likely too small for the first answer is asked again on a
              crop around it (agent.zoom; ``Recovery.zoom``): at most one extra request
    gate      the window scope may refuse it; the person may approve, skip, edit or quit
    ask       call_user instead: the question goes to the person (``Hooks.ask_user``), the
              answer into the history; with no one to ask the run ends as fail, the question
              its reason
    act       the executor performs it, then the screen is given time to settle
    progress  did the action change the screen (agent.progress)? A loop (the same action
              on an unchanged screen three times, or an A-B-A-B cycle) is answered in
              escalating order: tell the model, zoom in on its next click, then ask the
              person (``Recovery.on_stuck``) or end the run ``stuck``
    record    the Step goes to the recorder and ``on_step`` whatever happened (``finally``)
    remember  the step joins the history the model reads (with "the screen did not change"
              and any loop note as its result)

Between steps the person may take the desktop over (``Hooks.takeover``): that is recorded as a
human step (decision ``takeover``, screenshots before and after) and the model is told in its
history. Time the person spends (answering, holding the desktop) is not charged to ``max_time``.

Our errors (endpoint, display) end the run as ``error``; the outcome is written even after an
error or Ctrl-C, so a recording on disk always loads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from PIL import Image

from actions.executor import Executor, PointScreen
from actions.schema import TERMINAL_KINDS, Action, CallUser, Done, Fail, action_to_call
from agent.capture import Screen, Screenshot, thumbnail
from agent.config import Settings
from agent.errors import DeskpilotError, Interrupted, ModelError, TimeBudgetExceeded
from agent.grounding import Grounded, ask, feedback_for, ground_action
from agent.image import SentImage
from agent.planner import Planner, PlannerResult
from agent.progress import ESCALATION, Response, changed_since, find_loop, frame_change, is_change, loop_note
from agent.protocol import GroundingAsk, HistoryEntry, StepRequest
from agent.safety import Decision
from agent.text import quoted
from agent.threads import background_pool
from agent.trajectory import Attempt, LoopCheck, Outcome, OutcomeStatus, SentInfo, Step, Zoom
from agent.zoom import ZoomMode, check_zoom_answer, crop_for, cut_crop, element_for, retried_unchanged, zoom_reason

Approve = Callable[[Action, list[PointScreen]], Decision]
Refuse = Callable[[Action, list[PointScreen]], "str | None"]
AskUser = Callable[[str], "str | None"]  # the question -> the person's answer (None: no answer)


class Takeover(Protocol):
    """The person's way to take the desktop over between steps (agent.safety.Takeover)."""

    def requested(self) -> bool:
        """Whether the person asked for the desktop."""
        ...

    def hold(self) -> None:
        """Block while the person has the desktop; return when they hand it back."""
        ...


@dataclass(frozen=True)
class Limits:
    """When a run stops even if the model has not finished."""

    max_steps: int = 30
    max_time_s: float | None = None
    max_cost_usd: float | None = None
    model_retries: int = 2  # extra requests per step after an unusable reply


@dataclass(frozen=True)
class Recovery:
    """How a run copes with an imperfect model (see agent.zoom and agent.progress).

    ``zoom``: auto (when a target is likely too small for the first answer), always, off.
    ``on_stuck(step, message)``: asked when a loop outlasted telling the model and zooming;
    returns what the person said (given to the model, and the run goes on) or None to end
    the run ``stuck``. Without it the run ends ``stuck``.
    ``changed(step)``: the share of the screen the step's action changed (None: not
    measured); by default the settle's last probe against the step's capture. Replay
    simulate gives the recorded values.
    """

    zoom: ZoomMode = "auto"
    on_stuck: Callable[[Step, str], str | None] | None = None
    changed: Callable[[Step], float | None] | None = None


@dataclass
class EpisodeResult:
    """How a run ended, its steps, and the folder it was recorded in (None: not recorded)."""

    outcome: Outcome
    steps: list[Step] = field(default_factory=list)
    recording: Path | None = None


class Recorder(Protocol):
    """Where a run's steps go (``agent.trajectory.JsonlRecorder``, or a part of a longer recording)."""

    def save_screenshot(self, step: int, image: Image.Image | Callable[[], Image.Image], suffix: str = "") -> str:
        """Keep a capture of the step (or a function that makes it, called when it is written;
        ``suffix`` names a second one); returns its path in the recording."""
        ...

    def write_step(self, step: Step) -> None: ...

    def finish(self, outcome: Outcome) -> None: ...


@dataclass
class Hooks:
    """What a caller plugs into a run besides the three seams. All optional."""

    on_step: Callable[[Step], None] | None = None  # after each step is recorded
    settle: Callable[[], float] | None = None  # waits for the screen to settle, returns seconds
    approve: Approve | None = None  # the approval gate (agent.safety.Approver)
    refuse: Refuse | None = None  # a scope that may refuse an action (agent.window.WindowScope)
    stop_event: threading.Event | None = None  # set by the kill hotkey
    ask_user: AskUser | None = None  # offers call_user; None: a question ends the run as fail
    takeover: Takeover | None = None  # checked between steps


@dataclass
class Totals:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class Run:
    """The running state of one episode."""

    task: str
    screen: Screen
    planner: Planner
    executor: Executor
    settings: Settings
    limits: Limits
    recorder: Recorder | None
    hooks: Hooks
    recovery: Recovery = field(default_factory=Recovery)
    started: float = field(default_factory=time.monotonic)
    history: list[HistoryEntry] = field(default_factory=list)
    memory: list = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    person_s: float = 0.0  # time spent waiting for the person: not charged to max_time
    background: ThreadPoolExecutor = field(default_factory=lambda: background_pool("deskpilot-history"))
    thumbs: dict[int, Future[Image.Image]] = field(default_factory=dict)  # the screen before each recent step
    last_probe: tuple[int, Image.Image] | None = None  # (step, the settled screen after its action)
    loop_level: int = 0  # consecutive steps that completed a loop (the escalation reached)
    force_zoom: str | None = None  # the escalation asks the next pointing step to zoom in
    stop: tuple[OutcomeStatus, str] | None = None  # (status, message): end the run after this step
    actor: ThreadPoolExecutor = field(  # gates and runs a streamed action while its reply still arrives
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="deskpilot-act")
    )
    # the frame the last settle proved quiet, and the step that acted: the next step's screenshot
    settled: tuple[int, Screenshot] | None = None

    def finish(self, status: OutcomeStatus, message: str = "", answer: str | None = None) -> Outcome:
        return Outcome(
            status=status,
            message=message,
            answer=answer,
            steps=len(self.steps),
            duration_s=round(time.monotonic() - self.started, 3),
            prompt_tokens=self.totals.prompt_tokens,
            completion_tokens=self.totals.completion_tokens,
            cost_usd=self.totals.cost_usd,
        )

    def deadline(self) -> float | None:
        """When the time budget runs out (time.monotonic()), the person's own time not counted."""
        if self.limits.max_time_s is None:
            return None
        return self.started + self.limits.max_time_s + self.person_s

    def budget_exceeded(self) -> tuple[OutcomeStatus, str] | None:
        limits = self.limits
        if limits.max_time_s is not None and time.monotonic() - self.started - self.person_s >= limits.max_time_s:
            return "max_time", f"the time budget ({limits.max_time_s:g} s) ran out"
        cost = self.totals.cost_usd
        if limits.max_cost_usd is not None and cost >= limits.max_cost_usd:
            return "max_cost", f"the cost budget (${limits.max_cost_usd:g}) was reached (${cost:.4f})"
        return None


def run_episode(
    task: str,
    *,
    screen: Screen,
    planner: Planner,
    executor: Executor,
    settings: Settings,
    limits: Limits | None = None,
    recorder: Recorder | None = None,
    on_step: Callable[[Step], None] | None = None,
    settle: Callable[[], float] | None = None,
    stop_event: threading.Event | None = None,
    approve: Approve | None = None,
    refuse: Refuse | None = None,
    ask_user: AskUser | None = None,
    takeover: Takeover | None = None,
    recovery: Recovery | None = None,
) -> EpisodeResult:
    """Run one task to its end. Returns the outcome; raises DeskpilotError for our errors
    (after recording the outcome) and Interrupted for Ctrl-C / the kill switch; either
    exception carries the run so far as its ``result`` (an EpisodeResult).

    ``approve`` is asked before each action runs (see agent.safety.Approver), after
    ``refuse`` (a window scope) had its say. ``ask_user`` answers the model's call_user
    (without it call_user is not offered, and ends the run as fail); ``takeover`` lets the
    person have the desktop between steps. ``recovery``: zoom and loop handling (default:
    zoom auto). Secret values are kept out of the recording by the recorder's own ``scrub``."""
    run = Run(
        task, screen, planner, executor, settings, limits or Limits(max_steps=settings.max_steps), recorder,
        Hooks(on_step, settle, approve, refuse, stop_event, ask_user, takeover), recovery or Recovery(),
    )  # fmt: skip
    outcome: Outcome | None = None
    try:
        for _ in range(run.limits.max_steps):  # agent steps; human steps come on top
            if stop_event is not None and stop_event.is_set():
                raise Interrupted("stopped by the kill switch")
            if takeover is not None and takeover.requested():
                _human_step(run, takeover)
            budget_stop = run.budget_exceeded()
            if budget_stop:
                outcome = run.finish(*budget_stop)
                break
            action = _step(run, len(run.steps) + 1)  # human steps are numbered but not counted
            if run.stop is not None:
                outcome = run.finish(*run.stop)
                break
            if isinstance(action, CallUser) and run.steps[-1].user_answer is None:
                why = "asking is off: --no-ask, or no terminal" if ask_user is None else "no answer came"
                outcome = run.finish("fail", f"the model asked: {action.question} ({why})")
                break
            if isinstance(action, Done):
                outcome = run.finish("done", "the model declared the task done", action.answer)
                break
            if isinstance(action, Fail):
                outcome = run.finish("fail", action.reason or "the model declared the task infeasible")
                break
        else:
            outcome = run.finish("max_steps", f"the step budget ({run.limits.max_steps}) ran out")
    except (KeyboardInterrupt, Interrupted) as exc:
        killed = stop_event is not None and stop_event.is_set()
        message = (
            "stopped by the kill hotkey"
            if killed
            else ("interrupted by Ctrl-C" if isinstance(exc, KeyboardInterrupt) else str(exc))
        )
        outcome = run.finish("interrupted", message)
        stopped = Interrupted(message)
        stopped.result = EpisodeResult(outcome, run.steps)
        raise stopped from None
    except TimeBudgetExceeded:  # the deadline came during a model request
        outcome = run.finish("max_time", f"the time budget ({run.limits.max_time_s:g} s) ran out")
    except DeskpilotError as exc:
        outcome = run.finish("error", str(exc))
        exc.result = EpisodeResult(outcome, run.steps)
        raise
    finally:
        run.background.shutdown(wait=False)
        run.actor.shutdown(wait=True)
        if outcome is None:  # an unexpected exception: still leave a readable recording
            outcome = run.finish("error", "the run stopped on an internal error")
        if recorder is not None:
            recorder.finish(outcome)
    return EpisodeResult(outcome, run.steps)


# --- one step, in phases ----------------------------------------------------------------------


@dataclass
class _Perceived:
    sent: SentImage
    half_shot: Future[SentImage] | None  # the history shot, made while the model thinks
    shot: Screenshot  # the capture (zoom crops are cut from its full-resolution image)

    @property
    def image(self) -> Image.Image:
        return self.shot.image


def _step(run: Run, number: int) -> Action | None:
    """One step; the Step is recorded whatever happens inside. Returns the action (None: none)."""
    step, seen = _perceive(run, number)
    action: Action | None = None
    note = ""
    early = _Early(run, step, seen)
    try:
        grounded = _decide(run, step, seen.sent, early)
        if early.future is not None:
            action, note = early.future.result()  # gated and run while the reply was still arriving
            if action is not None and action.kind not in TERMINAL_KINDS:
                note = "; ".join(filter(None, (note, _progress(run, step, seen.shot))))
        elif grounded is None:
            note = "no usable action"
        elif isinstance(grounded.action, CallUser):
            action, note = grounded.action, _ask(run, step, grounded.action)
        else:
            _zoom(run, step, seen, grounded)
            action, note = _gate(run, step, grounded.action)
            if action is not None and action.kind not in TERMINAL_KINDS:
                note = _act(run, step, action) or note
                note = "; ".join(filter(None, (note, _progress(run, step, seen.shot))))
    except BaseException as exc:
        if step.error is None:
            step.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        early.wait()  # never leave an action half done behind a failed request
        step.timings.model_s = round(step.timings.model_s, 4)
        step.cost_usd = round(step.cost_usd, 8)
        _record(run, step)
    half = seen.half_shot.result() if seen.half_shot is not None else None
    _remember(run, HistoryEntry(number, step.thought, step.action_text or "(none)", half, note), step)
    return action


def _perceive(run: Run, number: int) -> tuple[Step, _Perceived]:
    """Take the frame the last settle proved quiet (else capture), prepare what the model sees,
    queue the lossless shot for the recorder and start the history shot.

    Timings: ``capture_s`` the grab (about 0 for a settled frame), ``prepare_s`` resizing and
    encoding (or waiting for the settle's preparation ahead), ``record_wait_s`` waiting for
    room in the recorder's queue; ``frame`` says where the frame came from."""
    settings = run.settings
    budget, encoding = settings.max_image_tokens, settings.image_encoding
    t0 = time.monotonic()
    settled, run.settled = run.settled, None
    # Only right after the step that acted: a human step in between (takeover) means a new capture.
    shot = settled[1] if settled is not None and run.steps and run.steps[-1].step == settled[0] else None
    frame: Literal["capture", "settle"] = "capture" if shot is None else "settle"
    if shot is None:
        shot = run.screen.capture()
    t1 = time.monotonic()
    ahead = shot.is_prepared(budget, encoding)  # the settle started it while it waited
    sent = shot.prepare(budget, encoding).result()
    t2 = time.monotonic()
    step = Step(
        step=number,
        started_at=time.time(),
        screenshot="",
        geometry=shot.monitor,
        sent=SentInfo(
            width=sent.size[0], height=sent.size[1], encoding=sent.encoding, bytes=sent.n_bytes, tokens=sent.tokens
        ),
        memory_in=list(run.memory),
    )
    if run.recorder is not None:
        step.screenshot = run.recorder.save_screenshot(number, lambda: shot.image)
    timings = step.timings
    timings.capture_s, timings.prepare_s = round(t1 - t0, 4), round(t2 - t1, 4)
    timings.record_wait_s, timings.frame, timings.ahead = round(time.monotonic() - t2, 4), frame, ahead
    half_shot = None
    if settings.history_images > 0:
        half_shot = shot.prepare(budget, encoding, half=True, executor=run.background)
    # The progress check's "before": the settle's last probe after the previous step's action,
    # taken an instant before this capture; without one (a first step, nothing done, a human
    # step in between) a thumbnail of this capture, made while the model thinks.
    before: Future[Image.Image] = Future()
    if run.last_probe is not None and run.last_probe[0] == number - 1:
        before.set_result(run.last_probe[1])
    else:
        before = run.background.submit(thumbnail, shot.pixels if shot.pixels is not None else shot.image)
    run.thumbs[number], run.last_probe = before, None
    for old in [n for n in run.thumbs if n <= number - 4]:
        del run.thumbs[old]
    return step, _Perceived(sent, half_shot, shot)


class _Early:
    """The action of a streamed reply, gated and run in ``Run.actor`` as soon as it is complete.

    Only actions that do something on screen start early (DONE, FAIL and call_user wait for the
    whole reply). The gate comes first as always: the window scope may refuse it, and when the
    person must approve, the early action simply waits for them."""

    def __init__(self, run: Run, step: Step, seen: _Perceived) -> None:
        self.run, self.step, self.seen = run, step, seen
        self.future: Future[tuple[Action | None, str]] | None = None

    def start(self, grounded: Grounded) -> None:
        if grounded.action.kind in TERMINAL_KINDS or isinstance(grounded.action, CallUser):
            return
        if _zoom_wanted(self.run, self.step, self.seen, grounded) is not None:
            return  # a click that will be asked again on a crop waits for the whole reply
        _show(self.step, grounded)
        self.future = self.run.actor.submit(self._gate_and_act, grounded.action)

    def _gate_and_act(self, action: Action) -> tuple[Action | None, str]:
        allowed, note = _gate(self.run, self.step, action)
        if allowed is not None:
            note = _act(self.run, self.step, allowed) or note
        return allowed, note

    def wait(self) -> None:
        if self.future is not None:
            wait([self.future])


def _show(step: Step, grounded: Grounded) -> None:
    """The step's action, its call text and targets from a grounded reply."""
    step.action = grounded.action.model_dump(mode="json")
    step.action_text = action_to_call(grounded.action)
    step.targets = list(grounded.targets)


def _decide(run: Run, step: Step, sent: SentImage, early: _Early | None = None) -> Grounded | None:
    """Ask the model (with retries on unusable replies); every reply is kept in step.attempts."""
    history, memory = list(run.history), list(run.memory)

    def request(feedback: str | None, no_thinking: bool) -> StepRequest:
        return StepRequest(
            run.task,
            step.step,
            sent,
            history,
            memory,
            feedback,
            no_thinking,
            ask_user=run.hooks.ask_user is not None,
            deadline=run.deadline(),
        )

    def on_reply(result: PlannerResult, error: ModelError | None) -> None:
        step.timings.model_s += result.latency_s
        step.prompt_text, step.estimated_tokens = result.prompt_text, result.estimated_tokens
        step.history_lines, step.history_images = len(history), result.history_images
        step.attempts.append(_account(run, step, result, error))

    attempts = 1 + run.limits.model_retries
    on_action = early.start if early is not None else None
    grounded, feedback = ask(run.planner, request, step.geometry, attempts, on_reply, on_action=on_action)
    started_early = early is not None and early.future is not None
    if grounded is None:
        step.error = feedback if started_early else f"no usable action after {attempts} replies: {feedback}"
        return None
    if not started_early:  # else the step already shows it (and the gate may have edited it)
        _show(step, grounded)
    step.thought, step.memory = grounded.thought, grounded.memory
    return grounded


def _account(run: Run, step: Step, result: PlannerResult, error: ModelError | None) -> Attempt:
    """Add a reply's tokens and cost to the step and the run; the Attempt that records it."""
    raw = result.raw
    cost = run.settings.cost(raw.prompt_tokens, raw.completion_tokens)
    step.prompt_tokens += raw.prompt_tokens
    step.completion_tokens += raw.completion_tokens
    step.cost_usd += cost
    run.totals.prompt_tokens += raw.prompt_tokens
    run.totals.completion_tokens += raw.completion_tokens
    run.totals.cost_usd += cost
    attempt = Attempt(
        raw=raw.model_dump(exclude_none=True),
        latency_s=round(result.latency_s, 4),
        transport_retries=result.transport_retries,
        protocol=result.protocol,
        ttft_s=result.ttft_s,
        action_s=result.action_s,
        total_s=result.total_s,
    )
    if error is not None:
        attempt.error, attempt.error_type = str(error), type(error).__name__
    return attempt


def _zoom_wanted(run: Run, step: Step, seen: _Perceived, grounded: Grounded) -> tuple[str, str] | None:
    """(why, which element) when the first answer's target should be asked again on a crop, else None."""
    if not grounded.targets:
        return None
    previous = run.steps[-1] if run.steps else None
    retried = retried_unchanged(previous, grounded.action, grounded.targets[0].point_image)
    reason = zoom_reason(
        run.recovery.zoom, grounded.action, step.geometry.size_image, seen.sent.size, retried, run.force_zoom
    )
    element = element_for(grounded.action, grounded.thought)
    return (reason, element) if reason is not None and element is not None else None


def _zoom(run: Run, step: Step, seen: _Perceived, grounded: Grounded) -> None:
    """Ask again on a crop around the first answer when its target is likely too small for it
    (agent.zoom). The answer, mapped back through the crop, replaces ``step.targets``; an
    unusable one leaves the first answer. Everything is kept in ``step.zoom``."""
    action, size_image = grounded.action, step.geometry.size_image
    wanted = _zoom_wanted(run, step, seen, grounded)
    if wanted is None:
        return
    reason, element = wanted
    first = step.targets[0]
    run.force_zoom = None
    t0 = time.monotonic()
    crop_image = crop_for(first.point_image, size_image)
    crop = cut_crop(seen.image, crop_image, run.settings.max_image_tokens, run.settings.image_encoding)
    zoom = step.zoom = Zoom(
        reason=reason,
        element_info=element,
        crop_image=crop_image,
        sent=SentInfo(
            width=crop.size[0], height=crop.size[1], encoding=crop.encoding, bytes=crop.n_bytes, tokens=crop.tokens
        ),
        first=list(step.targets),
        crop_s=round(time.monotonic() - t0, 4),
    )
    ask_for = GroundingAsk(element, action.kind, (crop_image[2], crop_image[3]))

    def request(feedback: str | None, no_thinking: bool) -> StepRequest:
        # thinking off: pointing again at a named element needs no reasoning, only time
        return StepRequest(run.task, step.step, crop, no_thinking=True, deadline=run.deadline(), grounding=ask_for)

    def on_reply(result: PlannerResult, error: ModelError | None) -> None:
        raw = result.raw
        zoom.attempts.append(_account(run, step, result, error))  # the step's totals include the zoom
        zoom.prompt_text, zoom.estimated_tokens = result.prompt_text, result.estimated_tokens
        zoom.prompt_tokens += raw.prompt_tokens
        zoom.completion_tokens += raw.completion_tokens
        zoom.cost_usd = round(zoom.cost_usd + run.settings.cost(raw.prompt_tokens, raw.completion_tokens), 8)
        zoom.model_s = round(zoom.model_s + result.latency_s, 4)

    zoomed, feedback = ask(run.planner, request, step.geometry, 1, on_reply, check_zoom_answer, crop_image)
    if zoomed is None:
        zoom.error = feedback
    else:
        zoom.used = True
        step.targets = [zoomed.targets[0]]
    step.timings.zoom_s = round(time.monotonic() - t0, 4)


def _gate(run: Run, step: Step, action: Action) -> tuple[Action | None, str]:
    """The scope, then the person. Returns the action to run (None: not run) and a note for the model."""
    if action.kind in TERMINAL_KINDS:
        return action, ""
    points = [t.point_screen for t in step.targets]
    if run.hooks.refuse is not None:
        reason = run.hooks.refuse(action, points)
        if reason is not None:
            step.decision, step.note = "refused", reason
            return None, reason
    if run.hooks.approve is None:
        return action, ""
    decision = run.hooks.approve(action, points)
    if decision.verdict == "quit":
        step.decision, step.note = "quit", "the user quit at the approval prompt"
        raise Interrupted("stopped at the approval prompt")
    if decision.verdict == "skip" or decision.action is None:
        step.decision, step.note = "skip", "skipped by the user"
        return None, "skipped by the user"
    if decision.action != action:
        edited = decision.action
        step.decision, step.note = "edit", f"edited by the user (the model proposed {step.action_text})"
        step.proposed_action = step.action
        step.action = edited.model_dump(mode="json")
        step.action_text = action_to_call(edited)
        step.targets = list(ground_action(edited, step.geometry))
        if run.hooks.refuse is not None:  # an edited action passes the same scope
            reason = run.hooks.refuse(edited, [t.point_screen for t in step.targets])
            if reason is not None:
                step.decision, step.note = "refused", reason
                return None, reason
        return edited, "the user replaced it with " + step.action_text
    return action, ""


def _act(run: Run, step: Step, action: Action) -> str:
    """Perform the action and let the screen settle. Returns a note for the model ("" if none)."""
    note = ""
    t_exec = time.monotonic()
    try:
        run.executor.execute(action, [t.point_screen for t in step.targets])
    except ModelError as exc:  # e.g. a key name no keyboard has: the model sees why
        step.error = feedback_for(exc)
        note = f"failed: {exc}"
    step.timings.execute_s = round(time.monotonic() - t_exec, 4)
    if run.hooks.settle is not None:
        step.timings.settle_s = round(run.hooks.settle(), 4)
        take_frame = getattr(run.hooks.settle, "take_frame", None)  # AdaptiveSettle keeps the quiet frame
        frame = take_frame() if take_frame is not None else None
        run.settled = (step.step, frame) if frame is not None else None
    return note


def _progress(run: Run, step: Step, shot: Screenshot) -> str:
    """Did the action change the screen (``shot``: the step's screenshot)? Then look for a loop
    and escalate (agent.progress). Returns what the model should read about it in its history
    ("" if nothing)."""
    if run.recovery.changed is not None:
        fraction = run.recovery.changed(step)
        changed = None if fraction is None else is_change(fraction)
    else:
        before = run.thumbs.get(step.step)
        after = getattr(run.hooks.settle, "last_probe", None)  # AdaptiveSettle keeps its last thumbnail
        fraction = changed_since(before.result() if before is not None else None, after)
        changed = None if fraction is None else is_change(fraction)
        run.last_probe = (step.step, after) if after is not None else None
        settled = run.settled[1] if run.settled is not None and run.settled[0] == step.step else None
        if changed is False and settled is not None:  # the thumbnails may miss a small change: look closely
            fraction = frame_change(shot, settled)
            changed = fraction > 0
    if fraction is not None:
        step.changed_fraction = round(fraction, 6)
        step.screen_changed = changed

    def same_screen(a: int, b: int) -> bool:
        if a not in run.thumbs or b not in run.thumbs:
            return False
        return not is_change(changed_since(run.thumbs[a].result(), run.thumbs[b].result()) or 0.0)

    loop = find_loop([*run.steps, step], same_screen)
    notes = ["the screen did not change"] if step.screen_changed is False else []
    if loop is None:
        run.loop_level, run.force_zoom = 0, None
        return "; ".join(notes)
    run.loop_level += 1
    response: Response = ESCALATION[min(run.loop_level, len(ESCALATION)) - 1]
    if response == "zoom":
        if run.recovery.zoom == "off":
            response = "told"  # --zoom off: tell it again
        else:
            run.force_zoom = "a loop: the model was told and did the same again"
    note = loop_note(loop, response)
    answer = None
    if response == "stuck" and run.recovery.on_stuck is not None:
        t0 = time.monotonic()
        try:
            answer = run.recovery.on_stuck(step, loop.message)
        finally:
            run.person_s += time.monotonic() - t0  # the person's time is not charged to max_time
        if answer is not None:  # the model reads it and the run goes on
            response, run.loop_level, note = "asked", 0, f"No progress: {loop.message}. The user says: {quoted(answer)}"
    if response == "stuck":
        run.stop = ("stuck", f"{loop.message}; the model was told twice and went on")
        note = ""
    step.loop = LoopCheck(
        kind=loop.kind, steps=list(loop.steps), response=response, message=loop.message, answer=answer
    )
    return "; ".join(filter(None, [*notes, note]))


def _ask(run: Run, step: Step, action: CallUser) -> str:
    """Put the model's question to the person. Returns the note for the model's history."""
    if run.hooks.ask_user is None:
        step.note = "not asked: no one can answer"
        return step.note
    t0 = time.monotonic()
    try:
        answer = run.hooks.ask_user(action.question)
    finally:
        run.person_s += time.monotonic() - t0
    step.user_answer = answer
    if answer is None:
        step.note = "the person gave no answer"
        return step.note
    step.note = "the person answered"
    return f"the person answered: {quoted(answer)}"


def _human_step(run: Run, takeover: Takeover) -> None:
    """The person has the desktop: a step with the screen before and after, no model, and a
    history line telling the model the person acted (its next screenshot is taken afresh)."""
    number = len(run.steps) + 1
    t0 = time.monotonic()
    before = run.screen.capture()
    step = Step(
        step=number, started_at=time.time(), screenshot="", geometry=before.monitor, decision="takeover",
        note="the person took the desktop over",
    )  # fmt: skip
    if run.recorder is not None:
        step.screenshot = run.recorder.save_screenshot(number, before.image)
    try:
        takeover.hold()
        after = run.screen.capture()
        if run.recorder is not None:
            step.screenshot_after = run.recorder.save_screenshot(number, after.image, "after")
    finally:
        held = time.monotonic() - t0
        run.person_s += held
        step.note = f"the person had the desktop for {held:.1f} s"
        _record(run, step)
    result = (
        f"the person took the desktop over for {held:.0f} s and may have changed what is on screen; "
        "look at the current screenshot again before you act"
    )
    _remember(run, HistoryEntry(number, "", "(none: the person acted)", None, result), step)


def _record(run: Run, step: Step) -> None:
    run.steps.append(step)
    if run.recorder is not None:
        run.recorder.write_step(step)
    if run.hooks.on_step is not None:
        run.hooks.on_step(step)


def _remember(run: Run, entry: HistoryEntry, step: Step) -> None:
    """Add the step to the history the model sees; forget screenshots it can no longer show."""
    run.history.append(entry)
    keep = run.settings.history_images
    for i in range(max(0, len(run.history) - keep)):
        old = run.history[i]
        if old.image is not None:
            run.history[i] = HistoryEntry(old.step, old.thought, old.action_text, None, old.result)
    if step.memory is not None:
        run.memory = step.memory
