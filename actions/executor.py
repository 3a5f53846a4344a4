"""The Executor seam: perform a grounded action. ``DryRunExecutor`` records and moves nothing.

An executor receives the validated action and its targets already converted to *screen
space* (the loop grounds them; executors never see model coordinates): one point for a
pointing action, two for a drag, none for keys, typing, WAIT, DONE and FAIL.

This module also owns the one description of an action for people (``describe``): the
approval prompt, dry-run lines, step lines and replay reports all use it. Every piece of
it that came from the model goes through ``agent.text.quoted``, so escape sequences,
carriage returns and bidi overrides are shown as escapes and cannot rewrite the line.
``Performed`` is what an action did (or would do): DryRunExecutor records it and replay
compares it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from actions.keys import combo_text, parse_combo
from actions.schema import Action
from agent.errors import InvalidArguments
from agent.text import quoted

PointScreen = tuple[int, int]
# How long a model-derived text may get in a description where a cut is allowed.
DESCRIBE_LIMIT = 120
_LINE_BREAKS = "\r\n"  # each presses Enter when typed


class Executor(Protocol):
    """Performs one action on the desktop (or pretends to)."""

    def execute(self, action: Action, points_screen: list[PointScreen]) -> None:
        """Perform ``action`` at ``points_screen``; raise DeskpilotError if it cannot."""
        ...


def text_of(action: Action) -> str | None:
    """The text an action carries: what it types, the keys it presses, the answer, reason or question."""
    for name in ("content", "keys", "answer", "reason", "question"):
        value = getattr(action, name, None)
        if value is not None:
            return value
    return None


def describe(
    what: Action | str,
    points_screen: Sequence[PointScreen] = (),
    text: str | None = None,
    *,
    limit: int | None = None,
    scrub: Callable[[str], str] | None = None,
) -> str:
    """One line saying what an action does, for a person.

    ``what`` is an action (its text, scroll direction and element description are taken
    from it) or just its kind, with ``text`` (typed text or keys). ``points_screen`` are its
    targets in screen space. Model text is shown through ``quoted``: with ``limit``, each
    piece longer than that is cut and the cut is marked; without it (the approval prompt)
    nothing is cut. ``scrub`` (e.g. ``Secrets.scrub``) is applied before any cut, so a cut
    never leaves part of a secret. A typed line break is named, as it presses Enter; a key
    combination is shown as the executor will press it, or as rejected.
    """
    clean = scrub or (lambda s: s)
    show = lambda s: quoted(clean(s), limit)
    kind = what if isinstance(what, str) else what.kind
    detail = ""
    if not isinstance(what, str):
        text = text_of(what)
        if kind == "scroll":
            detail = f" {what.direction} {what.step}"  # type: ignore[union-attr]
    line = kind + detail
    if points_screen:
        line += " at " + " -> ".join(f"({x}, {y})" for x, y in points_screen)
    element = getattr(what, "element_info", "")
    if element:
        line += f" on {show(element)}"
    if text is not None and (text or kind == "type"):
        line += f" {show(text)}"
    if kind == "key" and text is not None:
        try:
            line += f" (presses {combo_text(parse_combo(text))})"
        except InvalidArguments:
            line += " (not a key combination the executor knows: nothing will be pressed)"
    if kind == "type" and text:
        breaks = sum(text.count(c) for c in _LINE_BREAKS)
        if breaks:
            times = "" if breaks == 1 else f" {breaks} times"
            plural = "" if breaks == 1 else "s"
            line += f" (the text contains {breaks} line break{plural}: it presses Enter{times})"
    return line


@dataclass(frozen=True)
class Performed:
    """What an action did (or, in a dry run, would do): its kind, screen points and text
    (typed text or keys), and the step it belongs to when known."""

    step: int | None
    kind: str
    points_screen: tuple[PointScreen, ...] = ()
    text: str | None = None

    def __str__(self) -> str:
        return describe(self.kind, self.points_screen, self.text, limit=DESCRIBE_LIMIT)


@dataclass
class DryRunExecutor:
    """Records every action it is given and sends no input event. Used by --dry-run and tests."""

    performed: list[Performed] = field(default_factory=list)
    log: Callable[[str], None] | None = None  # e.g. print: one "dry-run: would ..." line per action

    def execute(self, action: Action, points_screen: list[PointScreen]) -> None:
        text = getattr(action, "content", None) or getattr(action, "keys", None)
        self.performed.append(Performed(None, action.kind, tuple(points_screen), text))
        if self.log is not None:
            self.log(f"dry-run: would {describe(action, points_screen)}")
