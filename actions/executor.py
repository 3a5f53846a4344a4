"""The Executor seam: perform a grounded action. ``DryRunExecutor`` records and moves nothing.

An executor receives the validated action and its targets already converted to *screen
space* (the loop grounds them; executors never see model coordinates): one point for a
pointing action, two for a drag, none for keys, typing, WAIT, DONE and FAIL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from actions.schema import Action

PointScreen = tuple[int, int]


class Executor(Protocol):
    """Performs one action on the desktop (or pretends to)."""

    def execute(self, action: Action, points_screen: list[PointScreen]) -> None:
        """Perform ``action`` at ``points_screen``; raise DeskpilotError if it cannot."""
        ...


@dataclass(frozen=True)
class ExecutedAction:
    """What DryRunExecutor was asked to do: the action kind, its screen points, its text."""

    kind: str
    points_screen: tuple[PointScreen, ...]
    text: str | None = None


@dataclass
class DryRunExecutor:
    """Records every action it is given and sends no input event. Used by --dry-run and tests."""

    performed: list[ExecutedAction] = field(default_factory=list)
    log: Callable[[str], None] | None = None  # e.g. print: one "would ..." line per action

    def execute(self, action: Action, points_screen: list[PointScreen]) -> None:
        text = getattr(action, "content", None) or getattr(action, "keys", None)
        done = ExecutedAction(action.kind, tuple(points_screen), text)
        self.performed.append(done)
        if self.log is not None:
            where = " -> ".join(f"({x}, {y})" for x, y in points_screen)
            self.log(f"dry-run: would {done.kind}" + (f" at {where}" if where else "") + (f" {text!r}" if text else ""))
