"""Fake models for the fake server: they look at the screenshot they were sent.

``FormBrain`` does the form task the way a correct GLM-4.5V would: it finds the cyan
field and the magenta OK button by colour in the *sent* image, answers in thousandths of
that image, and replies as tool calls when tools were offered, else in the trained text
format with box tokens. Asked to point again at an element in a zoomed-in crop (a zoom
request), it finds the element the prompt names in the crop.
"""

from __future__ import annotations

import json
import re
from typing import Any

from PIL import Image, ImageChops

from actions.schema import action_to_call, build_action
from agent.fakeserver import images_in
from agent.geometry import image_to_model

CYAN = (0, 255, 255)
MAGENTA = (255, 0, 255)


def find_color(image: Image.Image, rgb: tuple[int, int, int], tolerance: int = 40) -> tuple[int, int, int, int]:
    """Bounding box (x1, y1, x2, y2) of the pixels close to ``rgb``; raises if none."""
    bands = image.convert("RGB").split()
    masks = [band.point(lambda v, c=c: 255 if abs(v - c) <= tolerance else 0) for band, c in zip(bands, rgb)]
    mask = ImageChops.multiply(ImageChops.multiply(masks[0], masks[1]), masks[2])
    box = mask.getbbox()
    if box is None:
        raise LookupError(f"no pixel of colour {rgb} in the screenshot")
    return box[0], box[1], box[2] - 1, box[3] - 1


def thousandths_of(image: Image.Image, rgb: tuple[int, int, int]) -> list[int]:
    x1, y1, x2, y2 = find_color(image, rgb)
    return list(image_to_model(((x1 + x2) / 2, (y1 + y2) / 2), image.size))


def request_text(body: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in body["messages"][0]["content"] if p["type"] == "text")


def steps_done(body: dict[str, Any]) -> int:
    return len(re.findall(r"^step \d+: ", request_text(body), flags=re.M))


def is_zoom_request(body: dict[str, Any]) -> bool:
    return "zoomed-in part of the screen" in request_text(body)


class FormBrain:
    """Click the field, type ``text``, click OK, then DONE. Records what it saw."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sent_sizes: list[tuple[int, int]] = []

    def __call__(self, body: dict[str, Any]) -> Any:
        screenshot = images_in(body)[-1]  # the current screenshot comes last
        if is_zoom_request(body):
            rgb = CYAN if "name field" in request_text(body) else MAGENTA
            return reply(("left_click", {"start_box": str(thousandths_of(screenshot, rgb))}), tools="tools" in body)
        self.sent_sizes.append(screenshot.size)
        step = steps_done(body)
        if step == 0:
            call = ("left_click", {"start_box": str(thousandths_of(screenshot, CYAN)), "element_info": "name field"})
        elif step == 1:
            call = ("type", {"content": self.text})
        elif step == 2:
            call = ("left_click", {"start_box": str(thousandths_of(screenshot, MAGENTA)), "element_info": "OK button"})
        else:
            call = ("DONE", {})
        return reply(call, tools="tools" in body)


def reply(call: tuple[str, dict[str, Any]], tools: bool) -> Any:
    name, args = call
    if tools:
        return {
            "content": f"Next: {name}.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            ],
        }
    text_call = action_to_call(build_action(name, args))
    return f"\nNext: {name}.\n<|begin_of_box|>{text_call}<|end_of_box|>\nMemory: []"


def fault(name: str) -> Any:
    """One fault a real endpoint produces in normal operation, as the fake server's answer."""
    from agent.fakeserver import FakeHTTP

    faults = {
        "429": FakeHTTP(429, {"error": {"message": "rate limited"}}, {"Retry-After": "1"}),
        "500": FakeHTTP(500, {"error": {"message": "internal error"}}),
        "hang": FakeHTTP(200, {"choices": []}, delay_s=3.0),  # longer than the client's --timeout
        "truncated_json": {
            "content": "",
            "tool_calls": [
                {"id": "t", "type": "function", "function": {"name": "type", "arguments": '{"content": "Crème br'}}
            ],
        },
        "no_action": "I can see the form. Let me think about what to do next.",
        "starved": {
            "choices": [
                {
                    "message": {"role": "assistant", "content": "", "reasoning_content": "Let me look again. " * 300},
                    "finish_reason": "length",
                }
            ]
        },
    }
    return faults[name]


FAULTS = ("429", "500", "hang", "truncated_json", "no_action", "starved")


class FaultyBrain:
    """Answers the first request of ``at_step`` (0-based steps done) with a fault, then
    behaves like ``inner``."""

    def __init__(self, inner: Any, name: str, at_step: int = 1) -> None:
        self.inner, self.name, self.at_step = inner, name, at_step
        self.injected = False

    def __call__(self, body: dict[str, Any]) -> Any:
        if not self.injected and steps_done(body) == self.at_step:
            self.injected = True
            return fault(self.name)
        return self.inner(body)
