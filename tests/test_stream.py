"""Streaming (issue 11): the incremental action finder, server-sent events read into the same
RawReply a whole reply gives, the action acted on before the reply ends, fallbacks and faults."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from actions.executor import DryRunExecutor
from actions.schema import LeftClick
from agent.capture import ImageScreen
from agent.config import Settings
from agent.fakeserver import FakeModelServer, StreamProfile, completion, stream_events
from agent.image import prepare_for_model
from agent.loop import Limits, run_episode
from agent.parsing import ActionWatch
from agent.planner import GLMPlanner
from agent.protocol import RawReply, StepRequest
from agent.trajectory import JsonlRecorder, load

SCREENS = Path(__file__).parent / "screens" / "dialog"
BOXED = "I see the name field.\n<|begin_of_box|>left_click(start_box='[500,497]')<|end_of_box|>\nMemory: [\"typed\"]"
SENT = prepare_for_model(Image.new("RGB", (640, 400)), 1000, "jpeg:90")


def feed_all(watch: ActionWatch, text: str, size: int = 3) -> list[tuple[int, object]]:
    """Feed text in pieces; (how much was fed, action) for each piece that completed the action."""
    found = []
    for i in range(0, len(text), size):
        got = watch.feed_content(text[i : i + size])
        if got is not None:
            found.append((i + size, got.action))
    return found


def test_watch_finds_a_boxed_call_exactly_when_its_box_closes():
    found = feed_all(ActionWatch(), BOXED, size=1)
    closed = BOXED.index("<|end_of_box|>") + len("<|end_of_box|>")
    assert found == [(closed, LeftClick(start_box=(500, 497)))]


def test_watch_finds_a_bare_call_at_the_memory_head_and_a_tool_block_at_its_close():
    bare = "Click it. left_click(start_box='[10,20]')\nMemory: []"
    assert [a for _, a in feed_all(ActionWatch(), bare)] == [LeftClick(start_box=(10, 20))]
    assert feed_all(ActionWatch(), "Click it. left_click(start_box='[10,20]')") == []  # no mark: the end decides
    xml = "ok <tool_call>left_click\n<arg_key>start_box</arg_key>\n<arg_value>[1,2]</arg_value>\n</tool_call> more"
    ((at, action),) = feed_all(ActionWatch(), xml, size=2)
    assert action == LeftClick(start_box=(1, 2)) and at >= xml.index("</tool_call>") + len("</tool_call>")


def test_watch_never_acts_on_thinking_or_an_unfinished_tool_call():
    thinking = "<think>maybe <|begin_of_box|>left_click(start_box='[1,2]')<|end_of_box|> or not"
    assert feed_all(ActionWatch(), thinking) == []
    watch = ActionWatch()
    assert watch.feed_tool_call("left_click", '{"start_box": "[1,2]"') is None
    assert watch.feed_tool_call("left_click", '{"start_box": "[1,2]", "element_info": "}') is None
    assert watch.feed_tool_call("left_click", '{"start_box": "[1,2]"}').action == LeftClick(start_box=(1, 2))


def test_watch_looks_a_bounded_number_of_times_at_hostile_text():
    watch = ActionWatch()
    feed_all(watch, "<|begin_of_box|>nothing(<|end_of_box|>" * 500, size=40)
    assert watch._tries <= 16 and watch.found is None


def sse(events: list[dict], comments: bool = True) -> bytes:
    body = b": keep-alive\n\n" if comments else b""
    for event in events:
        body += b"data: " + json.dumps(event).encode() + b"\n\n"
    return body + b"data: [DONE]\n\n"


def planner_for(handler, **settings) -> GLMPlanner:
    config = Settings.resolve("vllm", stream=True, max_retries=2, **settings)
    return GLMPlanner(config, transport=httpx.MockTransport(handler), sleep=lambda s: None)


@pytest.mark.parametrize(
    "message",
    [
        {"content": BOXED, "reasoning_content": "Let me look at the dialog first."},
        {"content": "Type it.", "reasoning": "openrouter thinks here",
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "type", "arguments": '{"content": "report.txt"}'}}]},
    ],
)  # fmt: skip
def test_a_streamed_reply_is_recorded_as_the_whole_reply_would_be(message):
    whole = completion(message)
    body = sse(stream_events(whole, include_usage=True))
    seen = []
    planner = planner_for(
        lambda request: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    result = planner.decide(StepRequest("t", 1, SENT), seen.append)
    expected = RawReply.from_completion(whole)
    assert result.raw.model_dump(exclude={"model"}) == expected.model_dump(exclude={"model"})
    assert len(seen) == 1 and result.ttft_s is not None and result.action_s is not None and result.total_s is not None


def test_usage_is_estimated_when_the_provider_sends_none_and_pieces_of_arguments_are_joined():
    pieces = ['{"start_', 'box": "[5', '00,497]"', "}"]
    events = [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "x",
                                "type": "function",
                                "function": {"name": "left_click", "arguments": ""},
                            }
                        ]
                    },
                }
            ]
        }
    ]
    events += [{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": p}}]}}]}
               for p in pieces]  # fmt: skip
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    planner = planner_for(
        lambda r: httpx.Response(200, content=sse(events), headers={"content-type": "text/event-stream"})
    )
    raw = planner.decide(StepRequest("t", 1, SENT)).raw
    assert raw.tool_calls[0]["function"]["arguments"] == "".join(pieces) and raw.finish_reason == "tool_calls"
    assert raw.prompt_tokens > 0 and raw.completion_tokens > 0


def test_an_error_event_is_retried_and_a_refused_stream_falls_back_for_the_run():
    calls = []

    def handler(request):
        body = json.loads(request.content)
        calls.append(body.get("stream"))
        if len(calls) == 1:
            return httpx.Response(200, content=sse([{"error": {"message": "overloaded"}}]),
                                  headers={"content-type": "text/event-stream"})  # fmt: skip
        if body["stream"]:
            return httpx.Response(400, json={"error": {"message": "stream mode is not supported"}})
        return httpx.Response(200, json=completion(BOXED))

    planner = planner_for(handler)
    result = planner.decide(StepRequest("t", 1, SENT))
    assert "overloaded" in result.transport_retries[0] and "streaming refused" in result.transport_retries[1]
    assert result.raw.content == BOXED and planner.stream is False
    planner.decide(StepRequest("t", 2, SENT))
    assert calls == [True, True, False, False]  # remembered: the second step asks for a whole reply at once


def test_a_stream_that_breaks_after_its_action_is_kept_not_asked_again():
    whole = completion(BOXED)
    events = stream_events(whole, include_usage=False)[:-3]  # cut inside the Memory list
    asked = []

    def handler(request):
        asked.append(1)
        return httpx.Response(200, content=sse(events)[: -len("data: [DONE]\n\n")] + b"data: {broken",
                              headers={"content-type": "text/event-stream"})  # fmt: skip

    seen = []
    result = planner_for(handler).decide(StepRequest("t", 1, SENT), seen.append)
    assert len(asked) == 1 and len(seen) == 1 and "kept the reply so far" in result.transport_retries[0]
    assert result.raw.content.startswith(BOXED[:60]) and result.raw.finish_reason == "error"


def test_a_stalled_stream_counts_against_the_timeout():
    profile = StreamProfile(first_token_s=0.1, tokens_per_s=2)  # the whole reply would take ~10 s
    with FakeModelServer(lambda body: BOXED, profile=profile) as server:
        config = Settings.resolve("vllm", base_url=server.base_url, stream=True, max_retries=0, read_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(Exception, match="timeout"):
            GLMPlanner(config).decide(StepRequest("t", 1, SENT))
    assert time.monotonic() - started < 5


class TimedExecutor(DryRunExecutor):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def execute(self, action, points):
        self.times.append(time.time())
        return super().execute(action, points)


def run_streamed(tmp_path, brain, profile=StreamProfile(0.05, 40), **hooks):
    executor = TimedExecutor()
    with FakeModelServer(brain, profile=profile) as server:
        settings = Settings.resolve("vllm", base_url=server.base_url, stream=True)
        recorder = JsonlRecorder(tmp_path / "rec", "t", settings.public())
        result = run_episode(
            "t", screen=ImageScreen(SCREENS), planner=GLMPlanner(settings), executor=executor, settings=settings,
            limits=Limits(max_steps=3, model_retries=1), recorder=recorder, **hooks,
        )  # fmt: skip
    return result, executor, server, load(recorder.path)


def test_the_action_runs_before_the_reply_ends_and_the_step_keeps_the_whole_reply(tmp_path):
    memory = ", ".join(f'"note {i}: the dialog asks for a file name"' for i in range(8))
    replies = iter([BOXED.replace('["typed"]', f"[{memory}]"), "DONE()"])
    result, executor, server, rec = run_streamed(tmp_path, lambda body: next(replies))
    assert result.outcome.status == "done" and len(executor.performed) == 1
    assert executor.times[0] < server.finished[0]  # acted while the Memory list was still streaming
    step = rec.steps[0]
    assert step.memory[0].startswith("note 0") and step.action["kind"] == "left_click"
    attempt = step.attempts[0]
    assert attempt.ttft_s <= attempt.action_s < attempt.total_s


def test_a_whole_reply_that_changes_its_action_is_a_model_error_and_nothing_else_runs(tmp_path):
    twice = BOXED.replace(
        "\nMemory", "\nNo, rather <|begin_of_box|>left_click(start_box='[10,10]')<|end_of_box|>\nMemory"
    )
    replies = iter([twice, "DONE()"])
    result, executor, _, rec = run_streamed(tmp_path, lambda body: next(replies))
    assert [a.points_screen for a in executor.performed] == [executor.performed[0].points_screen]
    assert rec.steps[0].attempts[0].error_type == "ActionChanged" and len(rec.steps[0].attempts) == 1
    assert "already ran" in rec.steps[0].error and result.outcome.status == "done"


def test_the_scope_gates_an_early_action_before_it_runs(tmp_path):
    replies = iter([BOXED, "DONE()"])
    refused = []

    def refuse(action, points):
        refused.append(action.kind)
        return "outside the window"

    result, executor, _, rec = run_streamed(tmp_path, lambda body: next(replies), refuse=refuse)
    assert refused == ["left_click"] and executor.performed == [] and rec.steps[0].decision == "refused"


@pytest.mark.live
def test_live_the_click_reaches_the_app_before_the_model_finishes_its_reply(tmp_path):
    from tests.fake_brains import FormBrain
    from tests.live_support import TargetApp, have_xvfb, xvfb_display
    from tests.test_live_e2e import deskpilot

    if not have_xvfb():
        pytest.skip("needs Xvfb and openbox")
    memory = "[" + ", ".join(f'"step {i} done"' for i in range(1, 21)) + "]"  # ~60 tokens after the action
    form = FormBrain("streamed")

    def brain(body):
        return form(body).replace("Memory: []", f"Memory: {memory}")

    with xvfb_display(1280, 800), TargetApp(tmp_path / "events.jsonl") as app:
        with FakeModelServer(brain, profile=StreamProfile(0.05, 40)) as server:
            proc = deskpilot(server, tmp_path / "rec", "--protocol", "text")
            out, err = proc.communicate(timeout=120)
            finished = list(server.finished)
        assert proc.returncode == 0, out + err
        clicks = [e for e in app.events() if e["event"] == "click"]
    assert clicks and clicks[0]["t"] < finished[0]  # the input reached the app while the reply still streamed


def test_a_click_that_will_be_zoomed_waits_for_the_whole_reply_and_clicks_the_zoomed_point(tmp_path):
    from agent.capture import Screenshot
    from agent.geometry import MonitorGeometry

    class Big:  # a 2560x1440 screen: sent shrunk, so --zoom auto asks again on a crop
        def capture(self) -> Screenshot:
            return Screenshot(Image.new("RGB", (2560, 1440), "white"), MonitorGeometry(0, 0, 2560, 1440))

    first = "The field.\n<|begin_of_box|>left_click(start_box='[500,500]', element_info='name field')<|end_of_box|>"
    first += "\nMemory: [" + ", ".join(f'"note {i}"' for i in range(20)) + "]"

    def brain(body):
        text = "".join(p.get("text", "") for p in body["messages"][0]["content"])
        if "Point at this element again" in text:
            return "<|begin_of_box|>left_click(start_box='[250,250]', element_info='name field')<|end_of_box|>"
        return first if "step 1:" not in text else "DONE()"

    executor = TimedExecutor()
    with FakeModelServer(brain, profile=StreamProfile(0.05, 40)) as server:
        settings = Settings.resolve("vllm", base_url=server.base_url, stream=True)
        recorder = JsonlRecorder(tmp_path / "rec", "t", settings.public())
        run_episode(
            "t", screen=Big(), planner=GLMPlanner(settings), executor=executor, settings=settings,
            limits=Limits(max_steps=3, model_retries=1), recorder=recorder,
        )  # fmt: skip
    step = load(recorder.path).steps[0]
    assert step.zoom is not None and step.zoom.used
    assert [a.points_screen for a in executor.performed] == [(step.targets[0].point_screen,)]
    assert step.targets[0].point_screen != step.zoom.first[0].point_screen  # the zoomed point, not the first
    assert executor.times[0] > server.finished[0]  # it did not act on the first answer mid-stream
