"""Progress checks and loop detection: did an action change the screen, and is the run going round?

**Progress.** After an action the loop lets the screen settle (``agent.settle``), polling a
small grayscale thumbnail. ``changed_since`` compares the screen before the action with the
settle's last probe: the share of thumbnail pixels that moved by more than
``PIXEL_THRESHOLD`` gray levels. More than ``NO_CHANGE_TOLERANCE`` (the settle's own
tolerance, about a 32x32-pixel area at 1080p: a blinking cursor does not count) is a
change. A thumbnail samples one pixel per block, so when it sees no change and both
full-resolution captures are at hand (the step's screenshot and the settle's quiet frame),
``frame_change`` compares them exactly before the model is told that nothing changed: any
change wider than a text caret counts (a typed word, a focus ring). "Before" is the previous action's last probe, taken an instant before the capture
the model saw (or, on a first step, a thumbnail of that capture made in the background
while the model thinks), so a step costs one comparison of two thumbnails (well under a
millisecond) and no extra capture.

**Loops.** ``find_loop(steps, same_screen)`` looks at the last steps:

* ``repeat``: the same action (``same_action``) three times in a row, each leaving the
  screen unchanged;
* ``cycle``: the last four actions go A, B, A, B (A and B different) and the screen came
  back each time: the capture before the third equals the one before the first, and the
  fourth's the second's (``same_screen`` compares captures by step number).

Steps whose action was not performed on the desktop (no usable reply, skipped, refused,
DONE, FAIL, a question to the person, a human step) never make a loop. The loop responds to a loop in escalating order (``ESCALATION``): tell the
model, then zoom in on its next pointing step (and tell it again), then ask the person
(a hook) or end the run ``stuck``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageChops

from actions.schema import TERMINAL_KINDS
from agent.capture import Screenshot
from agent.geometry import MODEL_SPACE
from agent.settle import SettleConfig, changed_fraction
from agent.trajectory import Step

NO_CHANGE_TOLERANCE = SettleConfig.tolerance  # share of thumbnail pixels that may differ on an unchanged screen
CARET = (4, 64)  # screen pixels (width, height): a change within such a box is a text caret blinking
ROWS_COMPARED = 16  # full frames are compared this many rows at a time (frame_change)
PIXEL_THRESHOLD = SettleConfig.pixel_threshold  # gray levels a thumbnail pixel must move to count
SAME_POINT_THOUSANDTHS = 20  # two points this close (per axis, thousandths of the screen) are the same target
REPEATS = 3  # the same action on an unchanged screen this many times is a loop
Response = Literal["told", "zoom", "asked", "stuck"]
ESCALATION: tuple[Response, ...] = ("told", "zoom", "stuck")  # the n-th loop step in a row does this (or asks)


@dataclass(frozen=True)
class Loop:
    """A loop the last steps make."""

    kind: Literal["repeat", "cycle"]
    steps: tuple[int, ...]
    message: str  # for the person and, in the history, for the model


def changed_since(before: Image.Image | None, after: Image.Image | None) -> float | None:
    """The share of the screen that changed between two thumbnails (None: one is missing)."""
    if before is None or after is None:
        return None
    return changed_fraction(before, after, PIXEL_THRESHOLD)


def is_change(fraction: float) -> bool:
    return fraction > NO_CHANGE_TOLERANCE


def frame_change(before: Screenshot, after: Screenshot) -> float:
    """The share of the screen's pixels that changed between two full-resolution captures, for
    when the thumbnails saw nothing: a thumbnail samples one pixel per block, so a typed word
    or a focus ring on a big screen can fall between its samples (at 3840x2160 a 13-pixel word
    touches none). Equal bytes are 0.0 at once; else bands of ``ROWS_COMPARED`` rows are
    compared as bytes and only the differing ones are looked into. A change no wider than a
    text caret (``CARET``) is a cursor blinking: 0.0."""
    if before.size != after.size:
        return 1.0
    width, height = before.size
    if before.pixels is not None and after.pixels is not None:
        data = before.pixels.data, after.pixels.data
        images = before.pixels.view(), after.pixels.view()
    else:
        images = before.image, after.image
        data = images[0].tobytes(), images[1].tobytes()
    if data[0] == data[1]:
        return 0.0
    stride = len(data[0]) // height
    changed, box = 0, None
    for top in range(0, height, ROWS_COMPARED):
        start, end = top * stride, (top + ROWS_COMPARED) * stride
        if data[0][start:end] == data[1][start:end]:
            continue
        region = (0, top, width, min(height, top + ROWS_COMPARED))
        diff = ImageChops.difference(images[0].crop(region), images[1].crop(region))
        bands = diff.split()[:3]
        moved = ImageChops.lighter(ImageChops.lighter(bands[0], bands[1]), bands[2])
        mask = moved.point(lambda v: 255 if v > PIXEL_THRESHOLD else 0)
        changed += mask.histogram()[255]
        if (inner := mask.getbbox()) is not None:
            left, upper, right, lower = inner[0], inner[1] + top, inner[2], inner[3] + top
            if box is not None:
                left, upper, right, lower = min(left, box[0]), box[1], max(right, box[2]), lower
            box = (left, upper, right, lower)
    if box is None or (box[2] - box[0] <= CARET[0] and box[3] - box[1] <= CARET[1]):
        return 0.0
    return changed / (width * height)


def performed(step: Step) -> bool:
    """Whether the step's action was carried out (so it can be part of a loop)."""
    return (
        step.action is not None
        and step.action.get("kind") not in TERMINAL_KINDS | {"call_user"}
        and step.decision not in ("skip", "quit", "refused")
        and step.error is None
    )


def same_action(a: Step, b: Step) -> bool:
    """The same kind with the same text, keys and direction, at the same place: every point
    within ``SAME_POINT_THOUSANDTHS`` of the screen (a model's answers wobble a little)."""
    if a.action is None or b.action is None:
        return False
    ignore = ("start_box", "end_box", "element_info")
    if {k: v for k, v in a.action.items() if k not in ignore} != {k: v for k, v in b.action.items() if k not in ignore}:
        return False
    if len(a.targets) != len(b.targets):
        return False
    width, height = a.geometry.size_image
    near = SAME_POINT_THOUSANDTHS / MODEL_SPACE
    return all(
        abs(ta.point_image[0] - tb.point_image[0]) <= near * width
        and abs(ta.point_image[1] - tb.point_image[1]) <= near * height
        for ta, tb in zip(a.targets, b.targets)
    )


def find_loop(steps: Sequence[Step], same_screen: Callable[[int, int], bool]) -> Loop | None:
    """The loop the last steps make, if any (see the module docstring)."""
    last = list(steps[-REPEATS:])
    if (
        len(last) == REPEATS
        and all(performed(s) and s.screen_changed is False for s in last)
        and all(same_action(last[0], s) for s in last[1:])
    ):
        numbers = tuple(s.step for s in last)
        return Loop(
            "repeat",
            numbers,
            f"the same action ({last[-1].action_text}) changed nothing {REPEATS} times in a row "
            f"(steps {numbers[0]}-{numbers[-1]})",
        )
    four = list(steps[-4:])
    if len(four) == 4 and all(performed(s) for s in four):
        a, b, c, d = four
        if (
            same_action(a, c)
            and same_action(b, d)
            and not same_action(a, b)
            and same_screen(a.step, c.step)
            and same_screen(b.step, d.step)
        ):
            numbers = tuple(s.step for s in four)
            return Loop(
                "cycle",
                numbers,
                f"steps {numbers[0]}-{numbers[-1]} went back and forth between two actions "
                f"({a.action_text} and {b.action_text}) and the screen kept coming back to where it was",
            )
    return None


def loop_note(loop: Loop, response: str) -> str:
    """What the model reads about a loop in its history, for the escalation ``response``."""
    note = f"No progress: {loop.message}. Do something different"
    if response == "zoom":
        note += " (your next click will be checked on a zoomed-in view)"
    return note + ", or answer FAIL if the task cannot be done."
