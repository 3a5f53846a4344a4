"""Pure conversions between the four coordinate spaces. No I/O, no state.

1. **model space**: thousandths (0-1000) of the image the model was sent. Because the
   sent image is a resize of the whole capture, a thousandth of the sent image is the
   same fraction of the captured image: we never need the sent size to ground a point.
2. **image space**: pixels of the captured screenshot of one monitor (physical pixels,
   what mss returns).
3. **screen space**: what the input library moves to. pyautogui uses logical points on
   macOS Retina (physical pixels elsewhere) in the virtual-desktop frame, where a
   monitor's origin can be negative. ``MonitorGeometry.scale`` is image pixels per
   screen unit (2.0 on Retina, 1.0 on X11 and DPI-aware Windows).
4. **crop space**: pixels of a rectangle cut from the capture for zoom-in re-grounding
   (``CropRect``: left, top, width, height in image pixels). The model's answer to a
   zoomed request is thousandths of the crop it was sent: model -> crop pixels
   (``model_to_crop``) -> image pixels (``crop_to_image``, adding the crop's origin) ->
   screen. A ``Target`` whose ``crop_image`` is set holds such an answer.

Every variable holding a coordinate says its space in its name (``*_model``,
``*_image``, ``*_screen``, ``*_crop``). Image-token cost (the 28-pixel rule) lives here
too, since it is arithmetic on sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.errors import CoordinateOutOfRange

MODEL_SPACE = 1000
PATCH = 28  # one visual token per 28x28 pixels of the (resized) image
MAX_IMAGE_TOKENS = 6144  # the server downscales anything larger


@dataclass(frozen=True)
class MonitorGeometry:
    """Where one monitor's capture sits in screen space.

    ``left``/``top``: the monitor's origin in screen space (may be negative).
    ``width``/``height``: the captured image's size in image pixels.
    ``scale``: image pixels per screen unit.
    """

    left: int
    top: int
    width: int
    height: int
    scale: float = 1.0

    @property
    def size_image(self) -> tuple[int, int]:
        return (self.width, self.height)


def box_center(box_model: tuple[int, ...]) -> tuple[float, float]:
    """The point of a model-space point or box: a box's centre, a point itself."""
    if len(box_model) == 2:
        return float(box_model[0]), float(box_model[1])
    if len(box_model) == 4:
        x1, y1, x2, y2 = box_model
        return (x1 + x2) / 2, (y1 + y2) / 2
    raise ValueError(f"a point has 2 coordinates and a box 4, got {box_model!r}")


def check_model(value: float, source: object = None) -> float:
    """The one check of the model-space bound: a coordinate must lie in 0-1000.

    Values outside are a model error (CoordinateOutOfRange), never clicked: they are almost
    always pixels mistaken for thousandths."""
    if not 0 <= value <= MODEL_SPACE:
        where = f" in {source!r}" if source is not None else ""
        raise CoordinateOutOfRange(
            f"coordinate {value:g}{where} is outside 0-{MODEL_SPACE}: coordinates are thousandths of the "
            "screenshot's width and height, not pixels"
        )
    return value


def model_to_image(point_model: tuple[float, float], size_image: tuple[int, int]) -> tuple[int, int]:
    """Thousandths of the sent image -> pixel of the captured image (clamped inside it)."""
    x_model, y_model = (check_model(v) for v in point_model)
    width_image, height_image = size_image
    x_image = min(int(round(x_model / MODEL_SPACE * width_image)), width_image - 1)
    y_image = min(int(round(y_model / MODEL_SPACE * height_image)), height_image - 1)
    return x_image, y_image


def image_to_model(point_image: tuple[float, float], size_image: tuple[int, int]) -> tuple[int, int]:
    """Pixel of an image -> thousandths of it (what a correct model would answer)."""
    width_image, height_image = size_image
    x_model = int(round(point_image[0] / width_image * MODEL_SPACE))
    y_model = int(round(point_image[1] / height_image * MODEL_SPACE))
    return min(x_model, MODEL_SPACE - 1), min(y_model, MODEL_SPACE - 1)


def image_to_screen(point_image: tuple[int, int], monitor: MonitorGeometry) -> tuple[int, int]:
    """Pixel of the captured image -> input-library coordinates in the virtual desktop."""
    x_screen = monitor.left + int(math.floor(point_image[0] / monitor.scale))
    y_screen = monitor.top + int(math.floor(point_image[1] / monitor.scale))
    return x_screen, y_screen


def screen_to_image(point_screen: tuple[int, int], monitor: MonitorGeometry) -> tuple[int, int]:
    """Input-library coordinates -> pixel of this monitor's captured image: the first pixel of
    that screen unit, so ``image_to_screen`` gives the same point back at any scale >= 1
    (rounding would give 102 back for 103 at 150 %)."""
    return (
        int(math.ceil((point_screen[0] - monitor.left) * monitor.scale - 1e-9)),
        int(math.ceil((point_screen[1] - monitor.top) * monitor.scale - 1e-9)),
    )


# --- crop space -------------------------------------------------------------------

CropRect = tuple[int, int, int, int]  # left, top, width, height of a crop, in image pixels


def crop_around(center_image: tuple[float, float], side_image: int, size_image: tuple[int, int]) -> CropRect:
    """A square crop of ``side_image`` pixels centred on ``center_image``, moved to lie inside
    the image (and cut to the image's size when the image is smaller)."""
    width_image, height_image = size_image
    width_crop, height_crop = min(side_image, width_image), min(side_image, height_image)
    left = min(max(0, int(round(center_image[0] - width_crop / 2))), width_image - width_crop)
    top = min(max(0, int(round(center_image[1] - height_crop / 2))), height_image - height_crop)
    return left, top, width_crop, height_crop


def model_to_crop(point_model: tuple[float, float], crop_image: CropRect) -> tuple[int, int]:
    """Thousandths of the sent crop -> pixel of the crop (clamped inside it); values outside
    0-1000 raise CoordinateOutOfRange, as on the whole screenshot."""
    return model_to_image(point_model, (crop_image[2], crop_image[3]))


def crop_to_image(point_crop: tuple[int, int], crop_image: CropRect) -> tuple[int, int]:
    """Pixel of the crop -> pixel of the captured image (the crop's origin added)."""
    return crop_image[0] + point_crop[0], crop_image[1] + point_crop[1]


def image_to_crop(point_image: tuple[float, float], crop_image: CropRect) -> tuple[float, float]:
    """Pixel of the captured image -> pixel of the crop (outside the crop when not in it)."""
    return point_image[0] - crop_image[0], point_image[1] - crop_image[1]


def box_to_image(
    box_model: tuple[int, ...], size_image: tuple[int, int], crop_image: CropRect | None = None
) -> tuple[float, ...]:
    """A model-space point or box -> the same in image pixels (unrounded, for drawing): of the
    whole image, or of ``crop_image`` when the model was sent that crop."""
    if crop_image is None:
        left, top, (width, height) = 0, 0, size_image
    else:
        left, top, width, height = crop_image
    return tuple(
        (left if i % 2 == 0 else top) + v / MODEL_SPACE * (width if i % 2 == 0 else height)
        for i, v in enumerate(box_model)
    )


@dataclass(frozen=True)
class Target:
    """Where one point of an action lands, in all spaces (recorded as is in each step).

    ``box_model`` is thousandths of the whole screenshot, or of the crop ``crop_image`` when
    the point came from a zoomed request (then the crop's rectangle in image pixels is kept).
    """

    box_model: tuple[int, ...]  # the model's point [x, y] or box [x1, y1, x2, y2], thousandths
    point_image: tuple[int, int]  # pixel of the captured image
    point_screen: tuple[int, int]  # what the input library moves to
    crop_image: CropRect | None = None  # set when box_model is thousandths of this crop


def ground(
    box_model: tuple[int, ...], monitor: MonitorGeometry, crop_image: CropRect | None = None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """A model-space point or box -> (pixel in image space, point in screen space); with
    ``crop_image`` the model space is thousandths of that crop."""
    if crop_image is None:
        point_image = model_to_image(box_center(box_model), monitor.size_image)
    else:
        point_image = crop_to_image(model_to_crop(box_center(box_model), crop_image), crop_image)
    return point_image, image_to_screen(point_image, monitor)


def ground_box(box_model: tuple[int, ...], monitor: MonitorGeometry, crop_image: CropRect | None = None) -> Target:
    """A model-space point or box grounded on ``monitor`` (through ``crop_image`` if given)."""
    point_image, point_screen = ground(box_model, monitor, crop_image)
    return Target(tuple(box_model), point_image, point_screen, crop_image)


# --- image-token cost -------------------------------------------------------------


def image_tokens(size: tuple[int, int]) -> int:
    """Visual tokens for an image: one per 28x28 patch of the server's resize.

    The server rounds each side to the nearest multiple of 28 (at least one patch) and
    downscales anything above about 6,144 patches. Matches GLM45V.md's table:
    960x540 -> 646, 1280x720 -> 1,196, 1920x1080 -> 2,691, 2560x1440 -> 4,641.
    """
    width, height = size
    tokens = max(1, round(width / PATCH)) * max(1, round(height / PATCH))
    if tokens > MAX_IMAGE_TOKENS:
        w, h = fit_to_tokens(size, MAX_IMAGE_TOKENS)
        tokens = (w // PATCH) * (h // PATCH)
    return tokens


def fit_to_tokens(size: tuple[int, int], max_tokens: int) -> tuple[int, int]:
    """The size to send an image at so it costs at most max_tokens.

    An image within budget keeps its native size. A larger one is downscaled keeping
    its aspect ratio, to sides that are multiples of 28, so the server does not stretch
    it again.
    """
    width, height = size
    if max(1, round(width / PATCH)) * max(1, round(height / PATCH)) <= max_tokens:
        return width, height
    factor = math.sqrt(max_tokens * PATCH * PATCH / (width * height))
    while True:
        cols = max(1, math.floor(width * factor / PATCH))
        rows = max(1, math.floor(height * factor / PATCH))
        if cols * rows <= max_tokens:
            return cols * PATCH, rows * PATCH
        factor *= 0.99


def zoom_size(size_crop: tuple[int, int], max_tokens: int, max_upscale: float) -> tuple[int, int]:
    """The size to send a crop at: enlarged at most ``max_upscale`` times and within
    ``max_tokens`` (a crop too large for them is sent smaller), keeping its aspect ratio,
    with sides that are multiples of 28 (at least one patch)."""
    width, height = size_crop
    wanted = (max(1, int(width * max_upscale)), max(1, int(height * max_upscale)))
    fitted = fit_to_tokens(wanted, max_tokens)
    return max(PATCH, fitted[0] // PATCH * PATCH), max(PATCH, fitted[1] // PATCH * PATCH)
