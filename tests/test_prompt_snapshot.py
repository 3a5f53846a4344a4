"""The rendered prompt is pinned: a change to prompts/ or to the layout shows up as a diff here.

Refresh after a deliberate change with ``DESKPILOT_UPDATE_SNAPSHOTS=1 python -m pytest tests/test_prompt_snapshot.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from agent.capture import Screenshot
from agent.config import Settings
from agent.geometry import MonitorGeometry
from agent.image import prepare_for_model
from agent.protocol import HistoryEntry, StepRequest, build_body

SNAPSHOTS = Path(__file__).parent / "snapshots"


def request() -> StepRequest:
    shot = Screenshot(Image.new("RGB", (1280, 800), "white"), MonitorGeometry(0, 0, 1280, 800))
    half = prepare_for_model(shot.image, half=True)
    history = [
        HistoryEntry(1, "The shop page is open.", "hover(start_box='[500,300]', element_info='price')", half),
        HistoryEntry(2, "", "(none)", None, "no usable action"),
        HistoryEntry(3, "I read both prices.", "scroll(start_box='[500,500]', direction='down', step=5)", half),
    ]
    return StepRequest(
        "Read the original and discounted price and compute the discount rate.",
        4,
        prepare_for_model(shot.image),
        history,
        ["original $80.00", "now $60.00"],
        "UnparseableReply: no action found",
        ask_user=True,  # a run in a terminal offers call_user
    )


@pytest.mark.parametrize("protocol", ["text", "tools"])
def test_rendered_prompt_matches_the_snapshot(protocol, monkeypatch):
    monkeypatch.setattr("agent.protocol.platform_name", lambda: "Linux")
    settings = Settings.resolve("vllm", protocol=protocol)
    _, built = build_body(request(), settings, use_tools=protocol == "tools")
    path = SNAPSHOTS / f"prompt-{protocol}.txt"
    if os.environ.get("DESKPILOT_UPDATE_SNAPSHOTS"):
        path.write_text(built.prompt_text, encoding="utf-8")
    assert built.prompt_text == path.read_text(encoding="utf-8"), f"prompt changed: refresh {path.name} if meant"


def test_the_prompts_action_space_is_generated_from_the_action_models():
    from actions.schema import ACTION_TYPES, action_space_text
    from agent.parsing import parse_reply

    lines = action_space_text().splitlines()
    assert [line.split("(", 1)[0] for line in lines] == list(ACTION_TYPES)
    for line in lines:  # every example line is itself a call the parser reads (with real values filled in)
        call = line.split("  #", 1)[0].replace("'[x,y]'", "'[500,500]'").replace("'[x1,y1]'", "'[1,2]'")
        call = call.replace("'[x2,y2]'", "'[3,4]'").replace("'down or up'", "'down'").replace("keys=''", "keys='a'")
        call = call.replace("question=''", "question='Which one?'")
        assert parse_reply(call).action.kind == line.split("(", 1)[0]


def test_the_zoom_request_matches_its_snapshot(monkeypatch):
    """The zoom request: the grounding prompt and the crop, no history, memory or tools."""
    from agent.image import encode_image
    from agent.protocol import GroundingAsk

    monkeypatch.setattr("agent.protocol.platform_name", lambda: "Linux")
    settings = Settings.resolve("vllm", protocol="tools")
    crop = encode_image(Image.new("RGB", (256, 256), "white"), (784, 784), "jpeg:90")
    ask = GroundingAsk("the Save icon in the toolbar", "left_click", (256, 256))
    body, built = build_body(StepRequest("Save the document.", 3, crop, grounding=ask), settings, use_tools=True)
    assert "tools" not in body and built.history_images == 0 and built.history_lines == 0
    path = SNAPSHOTS / "prompt-zoom.txt"
    if os.environ.get("DESKPILOT_UPDATE_SNAPSHOTS"):
        path.write_text(built.prompt_text, encoding="utf-8")
    assert built.prompt_text == path.read_text(encoding="utf-8"), f"prompt changed: refresh {path.name} if meant"
