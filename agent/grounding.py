"""From a raw reply to a grounded action: the one "parse and ground", and the one retry path.

``interpret(raw, monitor, crop_image=None)`` parses a reply (``agent.parsing``) and grounds
every point of its action on ``monitor`` (``agent.geometry``): the action, its targets in
every coordinate space, the thought and the Memory list. With ``crop_image`` the reply
answered a zoom request: its thousandths are of that crop of the capture. The loop, ``replay check``, the healer and the bench
all call it, so a recorded reply is judged exactly as a live one.

``ask(...)`` is the one retry-with-feedback path: it asks the planner, interprets the reply,
and on a model error asks again with the error as feedback (an empty reply from a model that
thought too long is asked again with thinking off), at most ``attempts`` times. The loop and
the healer both use it; ``on_reply`` lets the caller record every reply and its cost.
With ``on_action`` a streaming planner's action is grounded and handed over the moment it is
complete; the whole reply must then give the same action, else that is a model error
(``ActionChanged``) and nothing more is asked for that step (the early action already ran).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from actions.schema import Action, action_to_call
from agent.errors import ActionChanged, EmptyReply, ModelError
from agent.geometry import CropRect, MonitorGeometry, Target, ground_box
from agent.parsing import ParsedReply, parse_reply
from agent.planner import Planner, PlannerResult
from agent.protocol import RawReply, StepRequest


@dataclass(frozen=True)
class Grounded:
    """A usable reply: the action and where it lands, with the text around it."""

    action: Action
    targets: tuple[Target, ...]
    thought: str
    memory: list | None


def ground_action(action: Action, monitor: MonitorGeometry, crop_image: CropRect | None = None) -> tuple[Target, ...]:
    """Targets of an action's points (start_box, then end_box) in every space; () if none.
    ``crop_image``: the action's thousandths are of that crop (a zoom answer)."""
    boxes = (getattr(action, name, None) for name in ("start_box", "end_box"))
    return tuple(ground_box(box_model, monitor, crop_image) for box_model in boxes if box_model is not None)


def interpret(raw: RawReply, monitor: MonitorGeometry, crop_image: CropRect | None = None) -> Grounded:
    """Parse ``raw`` and ground its action on ``monitor`` (through ``crop_image`` for a zoom
    answer); raise a ModelError if it is unusable."""
    parsed = parse_reply(raw.content, raw.tool_calls, raw.reasoning)
    return Grounded(parsed.action, ground_action(parsed.action, monitor, crop_image), parsed.thought, parsed.memory)


def feedback_for(error: ModelError) -> str:
    """What the model is told about its unusable reply."""
    return f"{type(error).__name__}: {error}"


def ask(
    planner: Planner,
    request: Callable[[str | None, bool], StepRequest],
    monitor: MonitorGeometry,
    attempts: int,
    on_reply: Callable[[PlannerResult, ModelError | None], None] | None = None,
    check: Callable[[Grounded], None] | None = None,
    crop_image: CropRect | None = None,
    on_action: Callable[[Grounded], None] | None = None,
) -> tuple[Grounded | None, str | None]:
    """Ask until a reply is usable, at most ``attempts`` times.

    ``request(feedback, no_thinking)`` builds each request; ``check`` may reject a usable
    reply with a ModelError (e.g. the healer wants as many points as recorded). With
    ``crop_image`` the replies are grounded through that crop (the zoom request). ``on_action``
    gets a streamed reply's action (grounded, checked) while the rest still arrives. Returns
    the grounded reply (or None) and the last feedback given.
    """
    feedback: str | None = None
    no_thinking = False
    early: list[Grounded] = []  # the action of the current reply handed out before its end

    def complete(parsed: ParsedReply) -> None:
        grounded = Grounded(parsed.action, ground_action(parsed.action, monitor, crop_image), parsed.thought, None)
        try:
            if check is not None:
                check(grounded)
        except ModelError:
            return  # the whole reply will be judged (and the error told) at the end
        early.append(grounded)
        if on_action is not None:
            on_action(grounded)

    for _ in range(attempts):
        early.clear()
        result = planner.decide(request(feedback, no_thinking), complete if on_action is not None else None)
        raw = result.raw
        try:
            try:
                grounded = interpret(raw, monitor, crop_image)
                if check is not None:
                    check(grounded)
            except ModelError as exc:
                if early:
                    raise ActionChanged(
                        f"the whole reply is unusable ({exc}) but its action was complete and ran"
                    ) from None
                raise
            if early and grounded.action != early[0].action:
                raise ActionChanged(
                    f"the whole reply gives {action_to_call(grounded.action)} but its first complete action, "
                    f"{action_to_call(early[0].action)}, already ran: act once per reply"
                )
        except ModelError as exc:
            if on_reply is not None:
                on_reply(result, exc)
            feedback = feedback_for(exc)
            if early:
                return None, feedback  # an action ran: nothing more for this step
            if isinstance(exc, EmptyReply) and raw.reasoning:
                no_thinking = True  # thinking used up the token budget: ask again without it
                feedback += " Keep your reasoning short and give the action."
            continue
        if on_reply is not None:
            on_reply(result, None)
        return grounded, None
    return None, feedback
