"""Zoom-in re-grounding: when a pointing step asks again on a crop, which crop, and how it is sent.

A model's pointing error is a fraction of the image it sees: 1 % is 38 px on a 3840-wide
screen but 4 px in a 400-px crop. So when a target is likely too small for the first
answer, the loop (``agent.loop._zoom``) cuts a square around the first answer from the
full-resolution capture, sends it enlarged with a short grounding prompt naming the same
element (``agent.protocol.GroundingAsk``, ``prompts/zoom.md``) and maps the answer back
through the crop (``agent.geometry``'s crop space). At most one extra request per step.

``zoom_reason`` decides, in ``auto`` mode, from three signs:

* the model's box is small: narrower or lower than two typical errors
  (``SMALL_BOX_THOUSANDTHS``), so its own centre may miss it;
* the model answered a point (no size given) on a screenshot it saw shrunk by
  ``DOWNSCALED`` or more (a large screen within the image budget): small targets
  shrink below what it can point at;
* the last step pointed at the same element and changed nothing (``retried_unchanged``).

``always`` zooms every clicking or hovering step, ``off`` never. Drags and scrolls are
not zoomed (two points, or an area). The crop's side is ``CROP_FRACTION`` of the screen's
longer side (five typical errors either way, so the target is in it) but at least
``MIN_CROP_PX`` pixels for context; it is sent enlarged up to ``MAX_UPSCALE`` times within
``ZOOM_IMAGE_TOKENS`` (and the run's image budget), on the 28-pixel grid.
"""

from __future__ import annotations

from typing import Literal, get_args

from PIL import Image

from actions.schema import TERMINAL_KINDS, Action
from agent.errors import NoPoint
from agent.geometry import MODEL_SPACE, CropRect, crop_around, zoom_size
from agent.grounding import Grounded
from agent.image import SentImage, encode_image
from agent.trajectory import Step

ZoomMode = Literal["auto", "always", "off"]
ZOOM_MODES: tuple[str, ...] = get_args(ZoomMode)
ZOOM_KINDS = frozenset({"left_click", "right_click", "middle_click", "hover", "left_double_click"})
ERROR_THOUSANDTHS = 10  # a model's typical pointing error: 1 % of the image it sees, per axis
SMALL_BOX_THOUSANDTHS = 2 * ERROR_THOUSANDTHS  # a box this narrow may be missed by its own centre
DOWNSCALED = 1.2  # capture pixels per sent pixel from which small targets are likely too small
CROP_FRACTION = 0.1  # the crop's side, a fraction of the screen's longer side
MIN_CROP_PX = 224  # ... but at least this many image pixels, for context
MAX_UPSCALE = 4.0  # the crop is enlarged at most this many times
ZOOM_IMAGE_TOKENS = 784  # 28 x 28 patches: about a third of a 1080p screenshot
ELEMENT_LIMIT = 200  # characters of the element description put in the grounding prompt


def zoom_reason(
    mode: str,
    action: Action,
    size_image: tuple[int, int],
    size_sent: tuple[int, int],
    retried: bool = False,
    forced: str | None = None,
) -> str | None:
    """Why this step should zoom in (None: it should not). ``retried``: the last step pointed
    at the same element and changed nothing; ``forced``: the loop escalation asks for it."""
    if mode == "off" or action.kind not in ZOOM_KINDS:
        return None
    if mode == "always":
        return "--zoom always"
    if forced:
        return forced
    if retried:
        return "the last try at the same element changed nothing"
    box_model: tuple[int, ...] | None = getattr(action, "start_box", None)
    if box_model is None:
        return None
    if len(box_model) == 4:
        width_model, height_model = box_model[2] - box_model[0], box_model[3] - box_model[1]
        if min(width_model, height_model) < SMALL_BOX_THOUSANDTHS:
            return f"a small box ({width_model}x{height_model} thousandths)"
        return None
    scale = size_image[0] / size_sent[0] if size_sent[0] else 1.0
    if scale >= DOWNSCALED:
        return f"a point on a screenshot sent {scale:.2f} times smaller than the screen"
    return None


def retried_unchanged(previous: Step | None, action: Action, point_image: tuple[int, int]) -> bool:
    """Whether ``previous`` pointed at the same element as ``action`` (same element_info, or
    a point within two typical errors) and left the screen unchanged."""
    if previous is None or previous.screen_changed is not False or not previous.targets or not previous.action:
        return False
    if previous.action.get("kind") not in ZOOM_KINDS:
        return False
    element = " ".join(getattr(action, "element_info", "").lower().split())
    if element and element == " ".join(str(previous.action.get("element_info", "")).lower().split()):
        return True
    width, height = previous.geometry.size_image
    near = 2 * ERROR_THOUSANDTHS / MODEL_SPACE
    (x0, y0), (x1, y1) = previous.targets[0].point_image, point_image
    return abs(x1 - x0) <= near * width and abs(y1 - y0) <= near * height


def element_for(action: Action, thought: str) -> str | None:
    """What the grounding prompt names: the action's element_info, else the step's thought
    (None when both are empty: nothing to point at again)."""
    text = " ".join((getattr(action, "element_info", "") or thought).split())
    if not text:
        return None
    return text if len(text) <= ELEMENT_LIMIT else text[: ELEMENT_LIMIT - 3] + "..."


def crop_for(point_image: tuple[int, int], size_image: tuple[int, int]) -> CropRect:
    """The square crop around the first answer's point."""
    side = max(MIN_CROP_PX, round(CROP_FRACTION * max(size_image)))
    return crop_around(point_image, side, size_image)


def cut_crop(image: Image.Image, crop_image: CropRect, max_image_tokens: int, encoding: str) -> SentImage:
    """The crop of the full-resolution capture as sent: enlarged within the zoom budget, encoded."""
    left, top, width, height = crop_image
    region = image.crop((left, top, left + width, top + height))
    size_sent = zoom_size((width, height), min(ZOOM_IMAGE_TOKENS, max_image_tokens), MAX_UPSCALE)
    return encode_image(region, size_sent, encoding)


def check_zoom_answer(grounded: Grounded) -> None:
    """A zoom answer must point at something: FAIL (not in the crop) or an action with no
    point raises NoPoint, and the step keeps its first answer."""
    if grounded.action.kind in TERMINAL_KINDS:
        raise NoPoint(f"{grounded.action.kind}: the model did not find the element in the zoomed-in picture")
    if not grounded.targets:
        raise NoPoint(f"{grounded.action.kind} points at nothing: the zoom answer must give start_box='[x,y]'")
