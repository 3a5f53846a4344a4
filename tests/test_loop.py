"""The loop with scripted parts: mocked screens, a ScriptedPlanner and the DryRunExecutor."""

from __future__ import annotations

from pathlib import Path

import pytest

from actions.executor import DryRunExecutor
from agent.capture import ImageScreen
from agent.config import Settings
from agent.errors import EndpointError, Interrupted
from agent.loop import Limits, run_episode
from agent.planner import ScriptedPlanner
from agent.trajectory import JsonlRecorder, load

SCREENS = Path(__file__).parent / "screens" / "dialog"
SETTINGS = Settings.resolve("vllm")


def run(replies, tmp_path, screens=SCREENS, limits=None, executor=None, **screen_kw):
    planner = ScriptedPlanner(replies)
    executor = executor or DryRunExecutor()
    recorder = JsonlRecorder(tmp_path / "rec", "name the file", SETTINGS.public())
    kwargs = dict(
        screen=ImageScreen(screens, **screen_kw),
        planner=planner,
        executor=executor,
        settings=SETTINGS,
        limits=limits or Limits(max_steps=10),
        recorder=recorder,
    )
    return planner, executor, recorder, kwargs


def test_click_type_done_with_exact_pixels(tmp_path):
    replies = [
        "The field is empty.\n<|begin_of_box|>left_click(start_box='[500,497]', element_info='name field')<|end_of_box|>",
        {
            "content": "Type the name.",
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "type", "arguments": '{"content": "report.txt"}'}}
            ],
        },
        "<|begin_of_box|>left_click(start_box='[468,615,562,685]', element_info='OK')<|end_of_box|>",
        "DONE(answer='saved as report.txt')",
    ]
    planner, executor, recorder, kwargs = run(replies, tmp_path)
    result = run_episode("name the file", **kwargs)
    assert result.outcome.status == "done" and result.outcome.answer == "saved as report.txt"
    assert [(a.kind, a.points_screen, a.text) for a in executor.performed] == [
        ("left_click", ((640, 398),), None),
        ("type", (), "report.txt"),
        ("left_click", ((659, 520),), None),  # centre of the box, inside OK (560-720, 500-548)
    ]
    planner.assert_complete()
    rec = load(recorder.path)
    assert [s.action["kind"] for s in rec.steps] == ["left_click", "type", "left_click", "DONE"]
    assert rec.steps[0].targets[0].box_model == (500, 497) and rec.steps[0].targets[0].point_image == (640, 398)
    assert rec.outcome.status == "done" and (recorder.path / rec.steps[0].screenshot).is_file()
    # the history given to the model grows, with the last screenshots at half size
    assert len(planner.calls[3].history) == 3 and planner.calls[3].history[0].image.size == (640, 400)
    assert "name field" in planner.calls[1].history[0].action_text


def test_monitor_origin_and_scale_reach_the_executor(tmp_path):
    replies = ["left_click(start_box='[500,500]')", "DONE()"]
    _, executor, _, kwargs = run(replies, tmp_path, origin=(-1440, -900), scale=2.0)
    run_episode("t", **kwargs)
    assert executor.performed[0].points_screen == ((-1440 + 320, -900 + 200),)


def test_unusable_replies_are_shown_back_and_never_executed(tmp_path):
    replies = [
        "I am not sure what to do.",
        "left_click(start_box='[1500,300]')",
        "left_click(start_box='[100,100]')",
        "DONE()",
    ]
    planner, executor, recorder, kwargs = run(replies, tmp_path)
    result = run_episode("t", **kwargs)
    assert result.outcome.status == "done"
    assert [a.points_screen for a in executor.performed] == [((128, 80),)]
    assert planner.calls[0].feedback is None
    assert "UnparseableReply" in planner.calls[1].feedback and "1500" in planner.calls[2].feedback
    step = load(recorder.path).steps[0]
    assert [a.error_type for a in step.attempts] == ["UnparseableReply", "CoordinateOutOfRange", None]


def test_a_step_without_usable_action_is_recorded_and_the_budget_ends_the_run(tmp_path):
    planner, executor, recorder, kwargs = run(["nothing useful"] * 6, tmp_path, limits=Limits(max_steps=2))
    result = run_episode("t", **kwargs)
    assert result.outcome.status == "max_steps" and executor.performed == []
    rec = load(recorder.path)
    assert len(rec.steps) == 2 and all("no usable action after 3 replies" in s.error for s in rec.steps)
    assert "no usable action" in planner.calls[-1].history[0].result


def test_fail_ends_the_run_with_the_reason(tmp_path):
    _, _, _, kwargs = run(["FAIL(reason='no such file')"], tmp_path)
    outcome = run_episode("t", **kwargs).outcome
    assert outcome.status == "fail" and outcome.message == "no such file"


def test_endpoint_failure_is_recorded_then_raised(tmp_path):
    planner, _, recorder, kwargs = run(["left_click(start_box='[1,1]')"], tmp_path)  # then no reply left
    with pytest.raises(EndpointError):
        run_episode("t", **kwargs)
    rec = load(recorder.path)
    assert rec.outcome.status == "error" and len(rec.steps) == 2 and "EndpointError" in rec.steps[1].error


def test_ctrl_c_during_an_action_keeps_the_recording(tmp_path):
    class Boom(DryRunExecutor):
        def execute(self, action, points_screen):
            raise KeyboardInterrupt

    _, _, recorder, kwargs = run(["key(keys='ctrl+s')"], tmp_path, executor=Boom())
    with pytest.raises(Interrupted):
        run_episode("t", **kwargs)
    rec = load(recorder.path)
    assert rec.outcome.status == "interrupted" and rec.steps[0].action["keys"] == "ctrl+s"


def test_memory_is_carried_to_the_next_step(tmp_path):
    replies = ["Price is 80.\nhover(start_box='[5,5]')\nMemory: [\"original $80\"]", "DONE(answer='25%')"]
    planner, _, _, kwargs = run(replies, tmp_path)
    run_episode("t", **kwargs)
    assert planner.calls[1].memory == ["original $80"]


def test_an_action_the_executor_rejects_is_shown_to_the_model(tmp_path):
    from agent.errors import InvalidArguments

    class NoSuchKey(DryRunExecutor):
        def execute(self, action, points_screen):
            if action.kind == "key":
                raise InvalidArguments("unknown key 'hyper'")
            super().execute(action, points_screen)

    planner, executor, recorder, kwargs = run(["key(keys='hyper+x')", "DONE()"], tmp_path, executor=NoSuchKey())
    assert run_episode("t", **kwargs).outcome.status == "done"
    assert "unknown key 'hyper'" in load(recorder.path).steps[0].error
    assert planner.calls[1].history[0].result == "failed: unknown key 'hyper'"
