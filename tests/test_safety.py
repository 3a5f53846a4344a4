"""Approvals, secrets, the kill-hotkey spec and thinking-starved retries (no display needed)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from actions.executor import DryRunExecutor
from actions.schema import build_action
from agent.config import Settings
from agent.errors import Interrupted, UsageError
from agent.fakeserver import FakeModelServer
from agent.loop import Limits, run_episode
from agent.planner import GLMPlanner, ScriptedPlanner
from agent.safety import Approver, Secrets, SecretTypingExecutor, parse_hotkey, parse_risky_combos
from agent.screen import ImageScreen
from agent.trajectory import JsonlRecorder, load
from tests.conftest import cli_env

SCREENS = Path(__file__).parent / "screens" / "dialog"


def approver(answers: str, confirm_all=True, **kw) -> tuple[Approver, io.StringIO]:
    out = io.StringIO()
    return Approver(confirm_all, stdin=io.StringIO(answers), stdout=out, **kw), out


def episode(replies, tmp_path, approve=None, executor=None):
    executor = executor or DryRunExecutor()
    recorder = JsonlRecorder(tmp_path, "t")
    planner = ScriptedPlanner(replies)
    kwargs = dict(
        screen=ImageScreen(SCREENS),
        planner=planner,
        executor=executor,
        settings=Settings.resolve("vllm"),
        limits=Limits(max_steps=5),
        recorder=recorder,
        approve=approve,
    )
    return executor, recorder, planner, kwargs


def test_skip_and_edit_at_the_approval_prompt(tmp_path):
    approve, out = approver("s\ne\nleft_click(start_box='[100,100]')\n")
    replies = ["left_click(start_box='[500,500]')", "key(keys='ctrl+s')", "DONE()"]
    executor, recorder, planner, kwargs = episode(replies, tmp_path, approve)
    assert run_episode("t", **kwargs).outcome.status == "done"
    assert [(a.kind, a.points_screen) for a in executor.performed] == [("left_click", ((128, 80),))]
    assert "planned: left_click at (640, 400)\n" in out.getvalue()
    steps = load(recorder.path).steps
    assert (
        steps[0].decision == "skip"
        and steps[0].note == "skipped by the user"
        and steps[0].targets[0].point_screen == [640, 400]
    )
    assert steps[1].note.startswith("edited by the user") and steps[1].action["kind"] == "left_click"
    assert planner.calls[1].history[0].result == "skipped by the user"


def test_quit_at_the_prompt_stops_the_run(tmp_path):
    approve, _ = approver("q\n")
    executor, recorder, _, kwargs = episode(["type(content='x')"], tmp_path, approve)
    with pytest.raises(Interrupted, match="approval prompt"):
        run_episode("t", **kwargs)
    assert executor.performed == [] and load(recorder.path).outcome.status == "interrupted"


def test_closed_stdin_never_approves(tmp_path):
    approve, _ = approver("")
    executor, _, _, kwargs = episode(["type(content='x')"], tmp_path, approve)
    with pytest.raises(Interrupted):
        run_episode("t", **kwargs)
    assert executor.performed == []


@pytest.mark.parametrize(
    "keys,asked", [("alt+F4", True), ("ctrl+alt+del", True), ("win+l", True), ("ctrl+s", False), ("alt", False)]
)
def test_risky_combos_always_need_approval(keys, asked):
    approve, _ = approver("", confirm_all=False)
    assert approve.needs_approval(build_action("key", {"keys": keys})) is asked
    assert not approve.needs_approval(build_action("left_click", {"start_box": "[1,1]"}))


@pytest.mark.parametrize(
    "keys",
    ["ctl+w", "ctrl alt delete", "option+f4", "windows+l", "lctrl+w", "Strg+Q", "ctrl+alt+delete+a", "Super_R + L"],
)
def test_every_spelling_of_a_risky_combo_needs_approval(keys):
    approve, _ = approver("", confirm_all=False)
    assert approve.needs_approval(build_action("key", {"keys": keys}))


# The default risky combinations as sets of canonical keys, written out independently of the code.
RISKY = [
    {"ctrl", "alt", "delete"},
    {"ctrl", "alt", "backspace"},
    {"alt", "f4"},
    {"win", "l"},
    {"ctrl", "alt", "l"},
    {"ctrl", "w"},
    {"ctrl", "q"},
    {"shift", "delete"},
]
_SIDES = [
    (side, after, joiner) for side in ("l", "left", "r", "right") for after in (False, True) for joiner in ("", "_")
]


def _names_of(key: str) -> list[str]:
    """Every name the executor's tables accept for a canonical key: modifier names with
    every side variant (lctrl, Control_R, left_win...), aliases, and the key itself."""
    from actions.keys import _ALIASES, _MODIFIERS

    if key in _MODIFIERS:
        names = list(_MODIFIERS[key])
        sided = [
            f"{name}{joiner}{side}" if after else f"{side}{joiner}{name}"
            for name in names
            for side, after, joiner in _SIDES
        ]
        return names + sided + [key + "left", key + "right"]
    return [key] + [alias for alias, target in _ALIASES.items() if target == key]


def _cases(name: str) -> list[str]:
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(name))
    return list(dict.fromkeys([name, name.upper(), name.title(), mixed]))


def _spellings():
    """(combo text, the canonical keys it names) for every risky combination: each key in
    every name and case, the others rotating through theirs; every separator; with an
    extra key added, and with a key left out."""
    separators = ["+", " + ", " ", "+ ", "  "]
    extras = ["a", "f5", "enter", "shift", "win", "alt", "Shift_L", "kp_5"]
    extra_keys = {
        "a": "a",
        "f5": "f5",
        "enter": "enter",
        "shift": "shift",
        "win": "win",
        "alt": "alt",
        "Shift_L": "shift",
        "kp_5": "num5",
    }
    n = 0
    for combo in RISKY:
        keys = sorted(combo)
        spellings = {k: [s for name in _names_of(k) for s in _cases(name)] for k in keys}
        for i, key in enumerate(keys):
            for spelled in spellings[key]:
                n += 1
                names = [spelled if j == i else spellings[k][n % len(spellings[k])] for j, k in enumerate(keys)]
                sep = separators[n % len(separators)]
                yield sep.join(names), set(keys)
                extra = extras[n % len(extras)]
                at = n % (len(names) + 1)
                yield sep.join(names[:at] + [extra] + names[at:]), set(keys) | {extra_keys[extra]}
                rest = names[:i] + names[i + 1 :]
                yield sep.join(rest), set(keys) - {key}


def test_risky_combos_are_judged_from_the_executors_own_parse():
    from actions.keys import held_keys, parse_combo
    from agent.errors import InvalidArguments

    approve, _ = approver("", confirm_all=False)
    checked = asked = 0
    for combo, canonical in _spellings():
        try:
            pressed = parse_combo(combo, platform="linux")  # what PyAutoGuiExecutor hands pyautogui
        except InvalidArguments:
            with pytest.raises(InvalidArguments):  # nothing is pressed, and the gate parses alike
                held_keys(combo, platform="linux")
            continue
        # held down: sides folded (ctrlleft is ctrl); a space can join words into one name
        # ("l win" is winleft), so only '+'-joined spellings must name exactly the keys meant
        held = {re.sub(r"^(ctrl|shift|alt|win)(left|right)$", r"\1", k) for k in pressed}
        if "+" in combo:
            assert held == canonical, combo
        risky = any(r <= held for r in RISKY)
        assert held_keys(combo, platform="linux") == held, combo
        assert approve.needs_approval(build_action("key", {"keys": combo})) is risky, combo
        checked += 1
        asked += risky
    assert checked > 5000 and 0 < asked < checked


def test_risky_combos_from_the_command_line_are_parsed_like_the_executor_does():
    approve, _ = approver("", confirm_all=False, always="ctl+shift+t, Control_R+Alt_L+Del,super+l")
    for keys in ("ctrl+shift+t", "Shift+Control_L+T", "ctrl+alt+delete", "win+shift+l", "CMD+L"):
        assert approve.needs_approval(build_action("key", {"keys": keys})), keys
    for keys in ("ctrl+t", "alt+f4", "ctrl+w"):  # the defaults were replaced
        assert not approve.needs_approval(build_action("key", {"keys": keys})), keys
    assert parse_risky_combos(["alt+f4", " "]) == [{"alt", "f4"}]


@pytest.mark.parametrize("entry", ["ctrl+foo", "ctrl+", "alt++f4"])
def test_a_bad_always_confirm_entry_is_a_usage_error_naming_it(entry):
    with pytest.raises(UsageError, match="--always-confirm") as info:
        parse_risky_combos(f"alt+f4,{entry}")
    assert repr(entry) in str(info.value)
    with pytest.raises(UsageError):
        Approver(False, ["alt+f4", entry])


def test_a_bad_always_confirm_entry_stops_the_cli_before_the_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "run", "t", "--provider", "vllm", "--base-url", "http://127.0.0.1:9/v1"]
        + ["--screens", str(SCREENS), "--recordings", str(tmp_path), "--always-confirm", "alt+f4,ctrl+hyperdrive"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert proc.returncode == 2 and "'ctrl+hyperdrive'" in proc.stderr and "Traceback" not in proc.stderr
    assert "unknown key 'hyperdrive'" in proc.stderr


def test_secrets_reach_only_the_executor():
    secrets = Secrets.from_task("log in with {{secret:PASSWORD}}", env={"DESKPILOT_SECRET_PASSWORD": "hunter2!"})
    inner = DryRunExecutor()
    SecretTypingExecutor(inner, secrets).execute(build_action("type", {"content": "{{secret:PASSWORD}}\n"}), [])
    assert inner.performed[0].text == "hunter2!\n"
    assert secrets.scrub("typed hunter2! ok") == "typed *** ok"
    with pytest.raises(UsageError, match="DESKPILOT_SECRET_TOKEN"):
        Secrets.from_task("use {{secret:TOKEN}}", env={})


@pytest.mark.parametrize(
    "spec,parsed", [("esc*3", ("esc", 3)), ("ctrl+alt+q", "<ctrl>+<alt>+q"), ("F12*2", ("f12", 2))]
)
def test_hotkey_specs(spec, parsed):
    assert parse_hotkey(spec) == parsed


@pytest.mark.parametrize("spec", ["esc*x", "ctrl+a*2", " + "])
def test_bad_hotkey_specs_are_usage_errors(spec):
    with pytest.raises(UsageError, match="kill hotkey"):
        parse_hotkey(spec)


def test_thinking_starved_reply_is_retried_with_thinking_off(tmp_path):
    starved = {"choices": [{"message": {"content": "", "reasoning_content": "long " * 500}, "finish_reason": "length"}]}
    bodies = []

    def brain(body):
        bodies.append(body)
        return starved if len(bodies) == 1 else "DONE()"

    with FakeModelServer(brain) as server:
        settings = Settings.resolve("siliconflow", api_key="k", base_url=server.base_url, thinking=True)
        planner = GLMPlanner(settings)
        result = run_episode(
            "t",
            screen=ImageScreen(SCREENS),
            planner=planner,
            executor=DryRunExecutor(),
            settings=settings,
            recorder=JsonlRecorder(tmp_path, "t"),
        )
    assert result.outcome.status == "done"
    assert bodies[0]["enable_thinking"] is True and bodies[1]["enable_thinking"] is False
    assert result.steps[0].attempts[0].error_type == "EmptyReply"


def test_no_secret_or_key_in_any_artifact_of_a_run(tmp_path):
    secret, key = "s3cr3t-Value-42", "sk-live-ABCDEFGHIJKLMNOPQRSTUV"
    replies = iter(
        [
            "I will type the password.\ntype(content='{{secret:PW}}')",
            f"The server echoed {key} and {secret}. DONE()",  # a leak from the model side is scrubbed too
        ]
    )
    with FakeModelServer(lambda body: next(replies)) as server:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent",
                "run",
                "sign in with {{secret:PW}}",
                "--provider",
                "openai",
                "--base-url",
                server.base_url,
                "--api-key",
                key,
                "--screens",
                str(SCREENS),
                "--recordings",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env(DESKPILOT_SECRET_PW=secret),
        )
        auth = server.headers[0].get("Authorization")
        sent = json.dumps(server.requests)
    assert proc.returncode == 0, proc.stderr
    assert auth == f"Bearer {key}" and secret not in sent  # the model sees the placeholder only
    assert "{{secret:PW}}" in sent
    artifacts = [proc.stdout, proc.stderr] + [
        p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()
    ]
    assert len(artifacts) > 5
    for text in artifacts:
        assert secret not in text and key not in text
    assert any("{{secret:PW}}" in text for text in artifacts)


def test_recorder_scrubs_secrets_as_they_stand_inside_json(tmp_path):
    from agent.trajectory import Geometry, Outcome, Step

    secret = 'pa"ss\\wörd'  # a quote and a backslash are escaped in JSON text
    secrets = Secrets({"PW": secret})
    recorder = JsonlRecorder(tmp_path, "log in with {{secret:PW}}", scrub=secrets.scrub)
    recorder.write_step(
        Step(
            step=1,
            started_at=0.0,
            screenshot="",
            geometry=Geometry(left=0, top=0, width=1, height=1),
            thought=f"the password is {secret}",
        )
    )
    recorder.finish(Outcome(status="done", message=f"typed {secret}"))
    written = "".join(p.read_text(encoding="utf-8") for p in recorder.path.rglob("*") if p.is_file())
    assert json.dumps(secret, ensure_ascii=False)[1:-1] not in written and "wörd" not in written
    assert written.count("***") == 2 and "{{secret:PW}}" in written
