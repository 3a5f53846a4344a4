"""The request each provider preset sends, pinned with httpx.MockTransport, and HTTP error mapping."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from PIL import Image

from agent.capture import Screenshot
from agent.config import PROVIDERS, Settings
from agent.errors import AuthRejected, EndpointError, UsageError
from agent.geometry import MonitorGeometry
from agent.image import prepare_for_model
from agent.planner import GLMPlanner
from agent.protocol import HistoryEntry, StepRequest, build_body

SECRET = "sk-test-0123456789abcdef0123"
OK = {
    "choices": [{"message": {"content": "DONE()"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2},
}


def shot(size=(1280, 800), color="white") -> Screenshot:
    return Screenshot(Image.new("RGB", size, color), MonitorGeometry(0, 0, *size))


def request(history: int = 0, size=(1280, 800)) -> StepRequest:
    s = shot(size)
    entries = [
        HistoryEntry(i, f"thought {i}", f"left_click(start_box='[{i},{i}]')", prepare_for_model(s.image, half=True))
        for i in range(1, history + 1)
    ]
    return StepRequest("open the settings", history + 1, prepare_for_model(s.image), entries, ["note"])


def capture(settings: Settings, req: StepRequest | None = None, answer=OK):
    seen: list[httpx.Request] = []

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append(r)
        return httpx.Response(200, json=answer)

    planner = GLMPlanner(settings, transport=httpx.MockTransport(handler))
    result = planner.decide(req or request())
    return seen, result


# provider, expected URL, model id, auth, thinking parameters
PRESETS = [
    (
        "siliconflow",
        "https://api.siliconflow.com/v1/chat/completions",
        "zai-org/GLM-4.5V",
        True,
        {"enable_thinking": True, "thinking_budget": 2048},
    ),
    ("zai", "https://api.z.ai/api/paas/v4/chat/completions", "glm-4.5v", True, {"thinking": {"type": "enabled"}}),
    (
        "bigmodel",
        "https://open.bigmodel.cn/api/paas/v4/chat/completions",
        "glm-4.5v",
        True,
        {"thinking": {"type": "enabled"}},
    ),
    (
        "openrouter",
        "https://openrouter.ai/api/v1/chat/completions",
        "z-ai/glm-4.5v",
        True,
        {"reasoning": {"enabled": True, "max_tokens": 2048}},
    ),
    (
        "vllm",
        "http://localhost:8000/v1/chat/completions",
        "zai-org/GLM-4.5V",
        False,
        {"chat_template_kwargs": {"enable_thinking": True}, "skip_special_tokens": False},
    ),
]


@pytest.mark.parametrize("provider,url,model,auth,thinking", PRESETS, ids=[p[0] for p in PRESETS])
def test_each_preset_sends_its_own_wire_format(provider, url, model, auth, thinking):
    env = {PROVIDERS[provider].key_env: SECRET} if auth else {}
    settings = Settings.resolve(provider, env=env, thinking=True, thinking_budget=2048)
    seen, result = capture(settings)
    (req,) = seen
    body = json.loads(req.content)
    assert str(req.url) == url
    assert body["model"] == model
    assert req.headers.get("authorization") == (f"Bearer {SECRET}" if auth else None)
    for key, value in thinking.items():
        assert body[key] == value
    assert body["temperature"] <= 0.1 and body["max_tokens"] >= 4096 + 1024
    assert body["tool_choice"] == "auto" and {t["function"]["name"] for t in body["tools"]} >= {
        "left_click",
        "left_drag",
        "type",
        "key",
        "scroll",
        "DONE",
        "FAIL",
        "WAIT",
    }
    (message,) = body["messages"]
    assert message["role"] == "user"
    images = [p for p in message["content"] if p["type"] == "image_url"]
    assert len(images) == 1 and images[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    detail = images[0]["image_url"].get("detail")
    assert detail == ("high" if provider == "siliconflow" else None)
    assert message["content"][-1]["type"] == "image_url"  # the current screenshot comes last
    assert result.raw.content == "DONE()" and result.raw.prompt_tokens == 10


@pytest.mark.parametrize(
    "provider,off",
    [
        ("siliconflow", {"enable_thinking": False}),
        ("zai", {"thinking": {"type": "disabled"}}),
        ("openrouter", {"reasoning": {"enabled": False}}),
        ("vllm", {"chat_template_kwargs": {"enable_thinking": False}}),
    ],
)
def test_thinking_off_shapes(provider, off):
    settings = Settings.resolve(provider, api_key="k", thinking=False)
    body, _ = build_body(request(), settings, use_tools=True)
    for key, value in off.items():
        assert body[key] == value
    assert "thinking_budget" not in body


def test_text_protocol_sends_no_tools_and_asks_for_box_tokens():
    settings = Settings.resolve("zai", api_key="k", protocol="text")
    seen, result = capture(settings)
    body = json.loads(seen[0].content)
    assert "tools" not in body and "tool_choice" not in body
    assert "<|begin_of_box|>" in body["messages"][0]["content"][0]["text"]
    assert result.protocol == "text"


def test_history_sends_last_four_shots_at_half_size_and_marks_older_omitted():
    settings = Settings.resolve("vllm")
    body, built = build_body(request(history=6), settings, use_tools=False)
    parts = body["messages"][0]["content"]
    images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(images) == 5  # 4 history shots + the current one
    sizes = [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))).size for u in images]
    assert sizes[:4] == [(640, 400)] * 4 and sizes[4] == (1280, 800)
    assert built.prompt_text.count("Screenshot: (omitted)") == 2
    assert "step 1: Screenshot: (omitted)" in built.prompt_text
    assert "step 6: Screenshot: [image 640x400]" in built.prompt_text
    assert '["note"]' in built.prompt_text


def test_context_budget_drops_oldest_shots_first():
    settings = Settings.resolve("vllm", max_tokens=61_500)  # leaves ~3K tokens for the prompt
    body, built = build_body(request(history=4), settings, use_tools=False)
    assert built.history_images < 4
    assert built.estimated_tokens <= 65_536 - 61_500 - 1024
    images = [p for p in body["messages"][0]["content"] if p["type"] == "image_url"]
    assert len(images) == built.history_images + 1
    assert "step 4: Screenshot: [image" in built.prompt_text or built.history_images == 0


def test_large_screens_are_downscaled_before_sending():
    req = request(size=(2560, 1440))
    assert req.screenshot.tokens <= 2700 and req.screenshot.size[0] % 28 == 0


def test_missing_key_names_the_variable():
    with pytest.raises(UsageError, match="SILICONFLOW_API_KEY"):
        Settings.resolve("siliconflow", env={})
    assert Settings.resolve("vllm", env={}).api_key is None


def test_key_order_flag_then_deskpilot_then_provider():
    env = {"DESKPILOT_API_KEY": "a", "ZAI_API_KEY": "b"}
    assert Settings.resolve("zai", env=env, api_key="c").api_key.get_secret_value() == "c"
    assert Settings.resolve("zai", env=env).api_key.get_secret_value() == "a"
    assert Settings.resolve("zai", env={"ZAI_API_KEY": "b"}).api_key.get_secret_value() == "b"


def test_key_never_in_repr_or_public_settings():
    settings = Settings.resolve("zai", api_key=SECRET)
    assert SECRET not in repr(settings) and SECRET not in json.dumps(settings.public())


def test_tool_call_reply_and_reasoning_are_kept():
    answer = {
        "choices": [
            {
                "message": {
                    "content": "",
                    "reasoning_content": "hmm",
                    "tool_calls": [{"id": "1", "type": "function", "function": {"name": "DONE", "arguments": "{}"}}],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    _, result = capture(Settings.resolve("vllm"), answer=answer)
    assert result.raw.reasoning == "hmm" and result.raw.tool_calls[0]["function"]["name"] == "DONE"
    openrouter = {"choices": [{"message": {"content": "DONE()", "reasoning": "think"}}]}
    _, result = capture(Settings.resolve("openrouter", api_key="k"), answer=openrouter)
    assert result.raw.reasoning == "think"


def _planner(responses, **settings):
    calls = []

    def handler(r):
        calls.append(r)
        item = responses[min(len(calls), len(responses)) - 1]
        if isinstance(item, Exception):
            raise item
        return item

    slept = []
    planner = GLMPlanner(
        Settings.resolve("zai", api_key=SECRET, **settings), transport=httpx.MockTransport(handler), sleep=slept.append
    )
    return planner, calls, slept


def test_401_is_auth_rejected_at_once():
    planner, calls, _ = _planner([httpx.Response(401, json={"error": {"message": "invalid key"}})])
    with pytest.raises(AuthRejected, match="rejected by zai") as info:
        planner.decide(request())
    assert len(calls) == 1 and SECRET not in str(info.value)


def test_429_honours_retry_after_then_succeeds():
    planner, calls, slept = _planner(
        [httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(503), httpx.Response(200, json=OK)]
    )
    result = planner.decide(request())
    assert len(calls) == 3 and result.raw.content == "DONE()"
    assert 2.0 <= slept[0] <= 2.5 and len(result.transport_retries) == 2


def test_connection_errors_exhaust_retries_into_endpoint_error():
    planner, calls, slept = _planner([httpx.ConnectError("refused")], max_retries=2)
    with pytest.raises(EndpointError, match="failed 3 times"):
        planner.decide(request())
    assert len(calls) == 3 and len(slept) == 2 and slept[1] > slept[0]


def test_400_shows_the_server_message():
    planner, _, _ = _planner([httpx.Response(400, json={"error": {"message": "messages too long"}})], protocol="text")
    with pytest.raises(EndpointError, match="messages too long"):
        planner.decide(request())


def test_server_rejecting_tools_falls_back_to_text():
    rejected = httpx.Response(400, json={"error": {"message": '"auto" tool choice requires --enable-auto-tool-choice'}})
    planner, calls, _ = _planner([rejected, httpx.Response(200, json=OK)])
    result = planner.decide(request())
    assert "tools" in json.loads(calls[0].content) and "tools" not in json.loads(calls[1].content)
    assert result.protocol == "text" and "text protocol" in result.transport_retries[0]
