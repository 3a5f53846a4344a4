"""The Python API (agent.api) against the fake model server, and ``deskpilot run --json``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from actions.schema import Key
from agent import Agent, EpisodeResult, Options, run_task
from agent.api import OptionFields
from agent.cli import build_parser
from agent.errors import EXIT_ENDPOINT, EndpointError, UsageError
from agent.fakeserver import FakeHTTP, FakeModelServer
from agent.trajectory import Outcome, Step, load
from tests.conftest import cli_env
from tests.fake_brains import FormBrain, steps_done

SCREENS = Path(__file__).parent / "screens" / "dialog"


def fake(server: FakeModelServer, tmp_path: Path, **options) -> dict:
    """Options for a dry run on the mocked dialog against ``server``."""
    return {"provider": "vllm", "base_url": server.base_url, "screens": SCREENS, "recordings": tmp_path, **options}


def test_run_task_does_the_form_and_returns_the_outcome_steps_and_recording(tmp_path):
    seen: list[Step] = []
    with FakeModelServer(FormBrain("report.txt")) as server:
        result = run_task("name the file report.txt and press OK", on_step=seen.append, **fake(server, tmp_path))
    assert isinstance(result, EpisodeResult) and result.outcome.status == "done"
    assert [s.step for s in seen] == [1, 2, 3, 4] and result.steps == seen
    assert [t.point_screen for s in result.steps for t in s.targets] == [(640, 398), (640, 524)]
    assert result.recording is not None and result.recording.parent == tmp_path
    recorded = load(result.recording)
    assert recorded.outcome.status == "done" and recorded.header.mode == "dry-run" and len(recorded.steps) == 4


def test_an_agent_keeps_one_connection_for_several_tasks_and_records_each(tmp_path):
    with FakeModelServer(lambda body: "DONE(answer='42')") as server:
        with Agent(**fake(server, tmp_path)) as agent:
            planner = agent.planner
            first = agent.run("what is six times seven?")
            second = agent.run("and again?")
            assert agent.planner is planner
        assert len(server.requests) == 2
    assert first.outcome.answer == second.outcome.answer == "42"
    assert first.recording != second.recording and {first.recording, second.recording} == set(tmp_path.iterdir())
    with pytest.raises(UsageError, match="closed"):
        agent.run("once more")


def test_no_recording_when_recordings_is_none(tmp_path):
    with FakeModelServer(lambda body: "DONE()") as server:
        result = run_task("x", **fake(server, tmp_path, recordings=None))
    assert result.recording is None and result.outcome.status == "done" and not any(tmp_path.iterdir())


def risky_then_done(body: dict) -> str:
    return "DONE()" if steps_done(body) else "Closing the tab.\nkey(keys='ctrl+w')"


@pytest.mark.parametrize(
    "answer,decision,performed",
    [
        ("approve", None, ["key"]),
        ("skip", "skip", []),
        (Key(keys="escape"), "edit", ["key"]),
    ],
)
def test_the_approval_callback_is_asked_for_a_risky_combination(tmp_path, answer, decision, performed):
    asked = []

    def approve(action, points_screen):
        asked.append((action.kind, action.keys, points_screen))
        return answer

    with FakeModelServer(risky_then_done) as server:
        with Agent(**fake(server, tmp_path)) as agent:
            result = agent.run("close the tab", approve=approve)
            done = [p.kind for p in agent.executor.performed]  # type: ignore[attr-defined]
    assert asked == [("key", "ctrl+w", [])]
    assert result.steps[0].decision == decision and done == performed
    if decision == "edit":
        assert result.steps[0].action == {"kind": "key", "keys": "escape"}


@pytest.mark.parametrize("confirm,expected", [(False, []), (True, ["left_click", "type", "left_click"])])
def test_the_callback_is_not_asked_for_a_plain_action_unless_confirm(tmp_path, confirm, expected):
    asked: list[str] = []
    with FakeModelServer(FormBrain("a.txt")) as server:
        result = run_task(
            "fill it", approve=lambda a, p: asked.append(a.kind) or "approve", **fake(server, tmp_path, confirm=confirm)
        )
    assert result.outcome.status == "done" and asked == expected


def test_a_quit_answer_ends_the_task_as_interrupted_with_its_result(tmp_path):
    with FakeModelServer(risky_then_done) as server:
        with pytest.raises(Exception) as caught:
            run_task("close the tab", approve=lambda a, p: "quit", **fake(server, tmp_path))
    result = caught.value.result  # type: ignore[attr-defined]
    assert type(caught.value).__name__ == "Interrupted" and result.outcome.status == "interrupted"
    assert load(result.recording).outcome.status == "interrupted"


def test_a_bad_approval_answer_is_a_clear_error(tmp_path):
    with FakeModelServer(risky_then_done) as server:
        with pytest.raises(UsageError, match="return 'approve', 'skip', 'quit' or an Action"):
            run_task("close the tab", approve=lambda a, p: True, **fake(server, tmp_path))


def test_an_endpoint_failure_is_raised_with_the_task_so_far(tmp_path):
    def brain(body):
        if len(server.requests) == 1:
            return "left_click(start_box='[500,500]')"
        return FakeHTTP(404, {"error": {"message": "no such model"}})

    with FakeModelServer(brain) as server:
        with pytest.raises(EndpointError) as caught:
            run_task("x", **fake(server, tmp_path))
    result = caught.value.result
    assert caught.value.exit_code == EXIT_ENDPOINT and result.outcome.status == "error"
    assert len(result.steps) == 2 and result.recording is not None
    assert load(result.recording).outcome.status == "error"


def test_budgets_apply(tmp_path):
    with FakeModelServer(lambda body: "WAIT()") as server:
        result = run_task("wait forever", **fake(server, tmp_path, max_steps=2))
    assert result.outcome.status == "max_steps" and len(result.steps) == 2


def test_the_key_and_secrets_stay_out_of_the_recording(tmp_path, monkeypatch):
    secret, key = "s3cr3t-Value-42", "sk-live-ABCDEFGHIJKLMNOPQRSTUV"
    monkeypatch.setenv("DESKPILOT_SECRET_PW", secret)
    replies = iter(["type(content='{{secret:PW}}')", f"I saw {secret} and {key}. DONE()"])
    with FakeModelServer(lambda body: next(replies)) as server:
        result = run_task("log in with {{secret:PW}}", api_key=key, **fake(server, tmp_path))
    texts = [p.read_text() for p in result.recording.rglob("*") if p.suffix in (".json", ".jsonl")]
    assert all(secret not in t and key not in t for t in texts) and any("***" in t for t in texts)


@pytest.mark.parametrize(
    "options,problem",
    [
        ({"max_step": 3}, "unknown option 'max_step'"),
        ({"max_steps": 0}, "bad option max_steps"),
        ({"max_time": float("nan")}, "bad option max_time"),
        ({"protocol": "xml"}, "bad option protocol"),
        ({"image_encoding": "gif"}, "unknown image encoding"),
        ({"always_confirm": "ctrl+nokey"}, "--always-confirm"),
        ({"provider": "nobody"}, "unknown provider"),
    ],
)
def test_bad_options_are_usage_errors_that_name_them(options, problem):
    with pytest.raises(UsageError, match=problem):
        Agent(provider=options.pop("provider", "vllm"), screens=SCREENS, **options)


def test_a_missing_key_is_a_usage_error_before_anything_is_built():
    with pytest.raises(UsageError, match="ZAI_API_KEY"):
        run_task("x", provider="zai", screens=SCREENS)


def test_every_run_flag_is_an_option_and_the_keyword_types_match():
    run = next(
        action.choices["run"]
        for action in build_parser()._actions
        if getattr(action, "choices", None) and "run" in action.choices
    )
    flags = {a.dest for a in run._actions} - {"help", "task", "json"}
    assert flags == set(Options.model_fields) == set(typing.get_type_hints(OptionFields))
    defaults = {a.dest: a.default for a in run._actions if a.dest in flags}
    made = Options.make(**defaults)
    assert made == Options(), "the CLI's defaults and the API's are the same"


def test_importing_the_api_does_not_load_the_cli():
    code = (
        "import sys, agent\n"
        "assert 'agent.api' not in sys.modules\n"
        "from agent import run_task, Agent, Options, EpisodeResult\n"
        "assert 'argparse' not in sys.modules and 'agent.cli' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=cli_env(), timeout=60)


# --- deskpilot run --json ----------------------------------------------------------------------


def run_json(server: FakeModelServer, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", "run", *args, "--json", "--provider", "vllm", "--base-url", server.base_url,
         "--screens", str(SCREENS), "--recordings", str(tmp_path)],
        capture_output=True, text=True, env=cli_env(**env), timeout=60,
    )  # fmt: skip


def test_run_json_writes_a_step_object_per_step_and_the_outcome(tmp_path):
    with FakeModelServer(FormBrain("report.txt")) as server:
        proc = run_json(server, tmp_path, "name the file report.txt and press OK")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    *steps, outcome = events
    assert [e["event"] for e in steps] == ["step"] * 4 and outcome["event"] == "outcome"
    recorded = load(outcome["recording"])
    assert [Step.model_validate(e) for e in steps] == recorded.steps  # the recording's own schema
    assert Outcome.model_validate(outcome) == recorded.outcome and outcome["exit_code"] == 0
    assert "step   1  left_click at (640, 398)" in proc.stderr and "dry-run: would type 'report.txt'" in proc.stderr


def test_run_json_scrubs_secrets_and_escapes_model_text(tmp_path):
    secret = 'pa"ss-wörd\u202e!'
    replies = iter(["type(content='{{secret:PW}}')", f"Echo: {secret} \x1b[2J done. DONE(answer='ok \u202e')"])
    with FakeModelServer(lambda body: next(replies)) as server:
        proc = run_json(server, tmp_path, "log in with {{secret:PW}}", DESKPILOT_SECRET_PW=secret)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.isascii() and "\x1b" not in proc.stdout  # every JSON line escapes control and bidi characters
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert secret not in json.dumps(events, ensure_ascii=False) and "***" in events[1]["thought"]
    assert events[-1]["answer"] == "ok \u202e"


def test_run_json_ends_with_the_outcome_even_after_an_endpoint_error(tmp_path):
    with FakeModelServer(lambda body: FakeHTTP(404, {"error": {"message": "no such model"}})) as server:
        proc = run_json(server, tmp_path, "x")
    assert proc.returncode == EXIT_ENDPOINT
    step, outcome = [json.loads(line) for line in proc.stdout.splitlines()]
    assert step["event"] == "step" and "HTTP 404" in step["error"]
    assert outcome["event"] == "outcome" and outcome["status"] == "error" and outcome["exit_code"] == EXIT_ENDPOINT
    assert "HTTP 404" in proc.stderr and "Traceback" not in proc.stderr


# --- deskpilot replay --json -------------------------------------------------------------------

EXAMPLE = Path(__file__).parent.parent / "recordings" / "examples" / "form-dry-run-text"


def test_replay_json_writes_each_difference_and_the_result(tmp_path):
    copy = tmp_path / "rec"
    shutil.copytree(EXAMPLE, copy)
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "replay", str(copy), "--json"],
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and "all 4 steps match" in proc.stderr, proc.stderr
    (result,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert result == {"event": "result", "mode": "check", "recording": str(copy), "steps": 4, "differing_steps": [],
                      "performed": 0, "healed": [], "exit_code": 0}  # fmt: skip
    lines = (copy / "steps.jsonl").read_text().splitlines()
    step = json.loads(lines[0])
    step["attempts"][-1]["raw"]["content"] = step["attempts"][-1]["raw"]["content"].replace("left_click", "right_click")
    lines[0] = json.dumps(step)
    (copy / "steps.jsonl").write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "replay", str(copy), "--json", "--mode", "simulate"],
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    *differences, result = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1 and result["exit_code"] == 1 and result["differing_steps"] == [1]
    assert differences[0]["event"] == "difference" and differences[0]["step"] == 1
    assert "right_click" in differences[0]["what"] and "DIFFERS step 1" in proc.stderr


@pytest.mark.parametrize("no_ask", [False, True])
def test_the_ask_callback_answers_the_models_question_unless_no_ask(tmp_path, no_ask):
    questions: list[str] = []
    replies = iter(["call_user(question='Which file?')", "DONE(answer='renamed')"])
    with FakeModelServer(lambda body: next(replies)) as server:
        result = run_task(
            "rename the file",
            ask=lambda question: questions.append(question) or "report.txt",
            **fake(server, tmp_path, no_ask=no_ask),
        )
    if no_ask:
        assert questions == [] and result.outcome.status == "fail" and "Which file?" in result.outcome.message
    else:
        assert questions == ["Which file?"] and result.outcome.status == "done"
        assert result.steps[0].user_answer == "report.txt"
