"""A fake model with limited precision, and screens with one small target, for proving zoom.

``ImpreciseModel`` points like a real vision model does: it finds the target (a square of
``TARGET_RGB``) in whatever image it receives, then answers ``k`` thousandths off, in a
direction drawn from a hash of that image, so the same image always gets the same answer
and the error is a fraction of the image received, as with GLM-4.5V. On the whole
screenshot of a 2560-wide screen 5 thousandths are 13 px; in a 256-px zoom crop, 1.3 px.
It answers a step's request with a click on the target (then DONE once a step is in the
history) and a zoom request with a click in the crop (FAIL when the target is not in it).
Use it as a ``FakeModelServer`` brain (``model(body)``) or inside a ``ScriptedPlanner``
(``model.decide_request(request)``); its token usage is what the request holds (visual
tokens of each image plus the text at three characters a token), as a server would count.

``small_target_screen(size, seed)`` paints the bench's generated desktop with one target of
``MIN_TARGET``-``MAX_TARGET`` pixels somewhere on it and returns the image and the target's
rectangle (left, top, right, bottom), image pixels, exclusive.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import random
import re
from typing import Any

from PIL import Image, ImageChops, ImageDraw

from agent.bench.scene import generate_screen
from agent.fakeserver import images_in
from agent.geometry import MODEL_SPACE, image_to_model, image_tokens
from agent.protocol import StepRequest, estimate_text_tokens

TARGET_RGB = (0, 200, 0)  # no pixel of the generated desktop is this close to pure green
TOLERANCE = 60  # per channel: the target survives bicubic downscaling and JPEG chroma subsampling
MIN_TARGET, MAX_TARGET = 12, 20  # the target's sides, image pixels
ELEMENT = "the small green square"
_HISTORY_LINE = re.compile(r"^step \d+: ", re.M)


def find_target(image: Image.Image) -> tuple[float, float] | None:
    """The centre (pixels) of the pixels close to TARGET_RGB, None if there are none."""
    bands = image.convert("RGB").split()
    masks = [band.point(lambda v, c=c: 255 if abs(v - c) <= TOLERANCE else 0) for band, c in zip(bands, TARGET_RGB)]
    mask = ImageChops.multiply(ImageChops.multiply(masks[0], masks[1]), masks[2])
    box = mask.getbbox()
    if box is None:
        return None
    return (box[0] + box[2] - 1) / 2, (box[1] + box[3] - 1) / 2


class ImpreciseModel:
    """Answers ``k`` thousandths off the target in whatever image it receives (deterministic)."""

    def __init__(self, k: float, element: str = ELEMENT) -> None:
        self.k = k
        self.element = element
        self.requests = 0
        self.zoom_requests = 0

    def point(self, image: Image.Image) -> tuple[int, int] | None:
        """Where it points in ``image`` (thousandths), or None when it sees no target."""
        center = find_target(image)
        if center is None:
            return None
        x_model, y_model = image_to_model(center, image.size)
        seed = int.from_bytes(hashlib.sha256(image.tobytes()).digest()[:8], "big")
        angle = random.Random(seed).uniform(0, 2 * math.pi)
        clamp = lambda v: min(MODEL_SPACE - 1, max(0, int(round(v))))
        return clamp(x_model + self.k * math.cos(angle)), clamp(y_model + self.k * math.sin(angle))

    def answer(self, image: Image.Image, zoom: bool, steps_done: int) -> str:
        """The reply to a request whose (last) image is ``image``."""
        self.requests += 1
        self.zoom_requests += zoom
        if steps_done and not zoom:
            return "The square was clicked.\n<|begin_of_box|>DONE()<|end_of_box|>\nMemory: []"
        point = self.point(image)
        if point is None:
            return "I cannot see it here.\n<|begin_of_box|>FAIL()<|end_of_box|>\nMemory: []"
        call = f"left_click(start_box='[{point[0]},{point[1]}]', element_info='{self.element}')"
        return f"I click {self.element}.\n<|begin_of_box|>{call}<|end_of_box|>\nMemory: []"

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        """As a FakeModelServer brain: a completion with usage counted from the request."""
        images = images_in(body)
        text = "".join(p.get("text", "") for m in body["messages"] for p in m["content"] if p["type"] == "text")
        zoom = "zoomed-in part of the screen" in text
        content = self.answer(images[-1], zoom, len(_HISTORY_LINE.findall(text)))
        prompt_tokens = estimate_text_tokens(text) + sum(image_tokens(i.size) for i in images)
        return {
            "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": estimate_text_tokens(content)},
        }

    def decide_request(self, request: StepRequest) -> str:
        """As a ScriptedPlanner callable: the same answer, from the request's image."""
        data = base64.b64decode(request.screenshot.data_url.split(",", 1)[1])
        with Image.open(io.BytesIO(data)) as image:
            return self.answer(image.convert("RGB"), request.grounding is not None, len(request.history))


def small_target_screen(size: tuple[int, int], seed: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The generated desktop with one small target on it, and the target's rectangle."""
    rng = random.Random(seed)
    image = generate_screen(size, seed=seed % 4)
    width, height = rng.randint(MIN_TARGET, MAX_TARGET), rng.randint(MIN_TARGET, MAX_TARGET)
    margin = 48
    left = rng.randrange(margin, size[0] - margin - width)
    top = rng.randrange(margin, size[1] - margin - height)
    ImageDraw.Draw(image).rectangle((left, top, left + width - 1, top + height - 1), fill=TARGET_RGB)
    return image, (left, top, left + width, top + height)
