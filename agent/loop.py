"""The one loop: perceive, plan, ground, act, record. Runs, dry runs and replays all use it.

``run_episode`` captures the screen, asks the planner, parses and grounds the reply,
executes the action and records the step, until the model says DONE or FAIL, a budget
runs out, or the run is interrupted. Every step reaches the recorder (in ``finally``),
failed or not, and the outcome is written even after an error or Ctrl-C.

Model errors (an unusable reply) are shown back to the model and retried at most
``Limits.model_retries`` times per step; our errors (endpoint, display) end the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from actions.executor import Executor
from actions.schema import TERMINAL_KINDS, Action, action_to_call
from agent.capture import Screen
from agent.config import Settings
from agent.errors import DeskpilotError, EmptyReply, Interrupted, ModelError
from agent.geometry import MonitorGeometry, Target, ground_box
from agent.image import prepare_for_model
from agent.parsing import parse_reply
from agent.planner import Planner
from agent.protocol import HistoryEntry, StepRequest
from agent.safety import Decision
from agent.trajectory import Attempt, JsonlRecorder, Outcome, SentInfo, Step


@dataclass(frozen=True)
class Limits:
    """When a run stops even if the model has not finished."""

    max_steps: int = 30
    max_time_s: float | None = None
    max_cost_usd: float | None = None
    model_retries: int = 2  # extra requests per step after an unusable reply


@dataclass
class EpisodeResult:
    outcome: Outcome
    steps: list[Step] = field(default_factory=list)
    recording: str | None = None


def ground_action(action: Action, monitor: MonitorGeometry) -> list[Target]:
    """Targets of a pointing action or drag in all three spaces; [] for the rest."""
    boxes = (getattr(action, name, None) for name in ("start_box", "end_box"))
    return [ground_box(box_model, monitor) for box_model in boxes if box_model is not None]


def run_episode(
    task: str,
    *,
    screen: Screen,
    planner: Planner,
    executor: Executor,
    settings: Settings,
    limits: Limits | None = None,
    recorder: JsonlRecorder | None = None,
    on_step: Callable[[Step], None] | None = None,
    settle: Callable[[], float] | None = None,
    stop_event: threading.Event | None = None,
    approve: Callable[[Action, str], Decision] | None = None,
) -> EpisodeResult:
    """Run one task to its end. Returns the outcome; raises DeskpilotError for our errors
    (after recording the outcome) and Interrupted for Ctrl-C / the kill switch.

    ``approve`` is asked before each action runs (see agent.safety.Approver). Secret
    values are kept out of the recording by the recorder's own ``scrub``."""
    limits = limits or Limits(max_steps=settings.max_steps)
    started = time.monotonic()
    history: list[HistoryEntry] = []
    memory: list = []
    steps: list[Step] = []
    totals = {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    outcome: Outcome | None = None
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deskpilot-history")

    def finish(status: str, message: str = "", answer: str | None = None) -> Outcome:
        return Outcome(
            status=status,
            message=message,
            answer=answer,
            steps=len(steps),
            duration_s=round(time.monotonic() - started, 3),
            **totals,
        )

    def record(step: Step) -> None:
        steps.append(step)
        if recorder is not None:
            recorder.write_step(step)
        if on_step is not None:
            on_step(step)

    try:
        for number in range(1, limits.max_steps + 1):
            if stop_event is not None and stop_event.is_set():
                raise Interrupted("stopped by the kill switch")
            budget_stop = _budget_exceeded(limits, started, totals["cost_usd"])
            if budget_stop:
                outcome = finish(*budget_stop)
                break
            step, entry, action = _run_step(
                number,
                task,
                screen,
                planner,
                executor,
                settings,
                limits,
                history,
                memory,
                recorder,
                record,
                totals,
                settle,
                approve,
                background,
            )
            history.append(entry)
            _drop_old_images(history, settings.history_images)
            if step.memory is not None:
                memory = step.memory
            if action is not None and action.kind in TERMINAL_KINDS:
                if action.kind == "DONE":
                    outcome = finish("done", "the model declared the task done", action.answer)
                else:
                    outcome = finish("fail", action.reason or "the model declared the task infeasible")
                break
        else:
            outcome = finish("max_steps", f"the step budget ({limits.max_steps}) ran out")
    except (KeyboardInterrupt, Interrupted) as exc:
        killed = stop_event is not None and stop_event.is_set()
        message = (
            "stopped by the kill hotkey"
            if killed
            else ("interrupted by Ctrl-C" if isinstance(exc, KeyboardInterrupt) else str(exc))
        )
        outcome = finish("interrupted", message)
        raise Interrupted(message) from None
    except DeskpilotError as exc:
        outcome = finish("error", str(exc))
        raise
    finally:
        background.shutdown(wait=False)
        if outcome is None:  # an unexpected exception: still leave a readable recording
            outcome = finish("error", "the run stopped on an internal error")
        if recorder is not None:
            recorder.finish(outcome)
    return EpisodeResult(outcome, steps, str(recorder.path) if recorder else None)


def _budget_exceeded(limits: Limits, started: float, cost: float) -> tuple[str, str] | None:
    if limits.max_time_s is not None and time.monotonic() - started >= limits.max_time_s:
        return "max_time", f"the time budget ({limits.max_time_s:g} s) ran out"
    if limits.max_cost_usd is not None and cost >= limits.max_cost_usd:
        return "max_cost", f"the cost budget (${limits.max_cost_usd:g}) was reached (${cost:.4f})"
    return None


def _drop_old_images(history: list[HistoryEntry], keep: int) -> None:
    """Forget encoded screenshots the prompt can no longer show (memory stays flat)."""
    for i in range(max(0, len(history) - keep)):
        if history[i].image is not None:
            e = history[i]
            history[i] = HistoryEntry(e.step, e.thought, e.action_text, None, e.result)


def _run_step(
    number,
    task,
    screen,
    planner,
    executor,
    settings,
    limits,
    history,
    memory,
    recorder,
    record,
    totals,
    settle,
    approve,
    background,
):
    """One step; the Step is recorded whatever happens inside."""
    t0 = time.monotonic()
    shot = screen.capture()
    sent = prepare_for_model(shot.image, settings.max_image_tokens, settings.image_encoding)
    step = Step(
        step=number,
        started_at=time.time(),
        screenshot="",
        geometry=shot.monitor,
        sent=SentInfo(
            width=sent.size[0], height=sent.size[1], encoding=sent.encoding, bytes=sent.n_bytes, tokens=sent.tokens
        ),
        memory_in=list(memory),
    )
    if recorder is not None:
        step.screenshot = recorder.save_screenshot(number, shot.image)
    step.timings.capture_s = round(time.monotonic() - t0, 4)
    # the half-size shot for later steps' history is made while the model thinks
    half_shot = (
        background.submit(prepare_for_model, shot.image, settings.max_image_tokens, settings.image_encoding, half=True)
        if settings.history_images > 0
        else None
    )
    action: Action | None = None
    result_note = ""
    try:
        feedback = None
        no_thinking = False
        for _ in range(1 + limits.model_retries):
            request = StepRequest(task, number, sent, list(history), list(memory), feedback, no_thinking)
            t_model = time.monotonic()
            result = planner.decide(request)
            step.timings.model_s += time.monotonic() - t_model
            raw = result.raw
            step.prompt_text, step.estimated_tokens = result.prompt_text, result.estimated_tokens
            step.history_lines, step.history_images = len(history), result.history_images
            cost = settings.cost(raw.prompt_tokens, raw.completion_tokens)
            step.prompt_tokens += raw.prompt_tokens
            step.completion_tokens += raw.completion_tokens
            step.cost_usd += cost
            totals["prompt_tokens"] += raw.prompt_tokens
            totals["completion_tokens"] += raw.completion_tokens
            totals["cost_usd"] += cost
            attempt = Attempt(
                raw=raw.model_dump(exclude_none=True),
                latency_s=round(result.latency_s, 4),
                transport_retries=result.transport_retries,
                protocol=result.protocol,
            )
            step.attempts.append(attempt)
            try:
                parsed = parse_reply(raw.content, raw.tool_calls, raw.reasoning)
                targets = ground_action(parsed.action, step.geometry)
            except ModelError as exc:
                attempt.error, attempt.error_type = str(exc), type(exc).__name__
                feedback = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, EmptyReply) and raw.reasoning:
                    # thinking used up the token budget: ask again without thinking
                    no_thinking = True
                    feedback += " Keep your reasoning short and give the action."
                continue
            action = parsed.action
            step.action = action.model_dump(mode="json")
            step.action_text = action_to_call(action)
            step.thought, step.memory, step.targets = parsed.thought, parsed.memory, targets
            break
        else:
            step.error = f"no usable action after {1 + limits.model_retries} replies: {feedback}"
            result_note = "no usable action"
        if action is not None and approve is not None and action.kind not in TERMINAL_KINDS:
            action, result_note = _ask_approval(approve, action, step)
        if action is not None and action.kind not in TERMINAL_KINDS:
            t_exec = time.monotonic()
            try:
                executor.execute(action, [t.point_screen for t in step.targets])
            except ModelError as exc:  # e.g. a key name no keyboard has: the model sees why
                step.error = f"{type(exc).__name__}: {exc}"
                result_note = f"failed: {exc}"
            step.timings.execute_s = round(time.monotonic() - t_exec, 4)
            if settle is not None:
                step.timings.settle_s = round(settle(), 4)
    except BaseException as exc:
        if step.error is None:
            step.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        step.timings.model_s = round(step.timings.model_s, 4)
        step.cost_usd = round(step.cost_usd, 8)
        record(step)
    half = half_shot.result() if half_shot is not None else None
    entry = HistoryEntry(number, step.thought, step.action_text or "(none)", half, result_note)
    return step, entry, action


def _ask_approval(approve, action: Action, step: Step) -> tuple[Action | None, str]:
    """Ask before acting. Returns the action to run (None: skipped) and a note for the model."""
    where = "".join(f" at ({t.point_screen[0]}, {t.point_screen[1]})" for t in step.targets)
    decision = approve(action, f"{action_to_call(action)}{where}")
    if decision.verdict == "quit":
        step.decision, step.note = "quit", "the user quit at the approval prompt"
        raise Interrupted("stopped at the approval prompt")
    if decision.verdict == "skip" or decision.action is None:
        step.decision, step.note = "skip", "skipped by the user"
        return None, "skipped by the user"
    if decision.action != action:
        step.decision, step.note = "edit", f"edited by the user (the model proposed {step.action_text})"
        step.proposed_action = step.action
        step.action = decision.action.model_dump(mode="json")
        step.action_text = action_to_call(decision.action)
        step.targets = ground_action(decision.action, step.geometry)
        return decision.action, "the user replaced it with " + step.action_text
    return action, ""
