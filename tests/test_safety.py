"""Approvals, secrets, the kill-hotkey spec and thinking-starved retries (no display needed)."""

from __future__ import annotations

import ast
import html
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from actions.executor import DryRunExecutor
from actions.schema import build_action
from agent.capture import ImageScreen
from agent.config import Settings
from agent.errors import Interrupted, UsageError
from agent.fakeserver import FakeHTTP, FakeModelServer
from agent.loop import Limits, run_episode
from agent.planner import GLMPlanner, ScriptedPlanner
from agent.safety import Approver, Secrets, SecretTypingExecutor, parse_hotkey, parse_risky_combos
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
        and steps[0].targets[0].point_screen == (640, 400)
    )
    assert steps[1].note.startswith("edited by the user") and steps[1].action["kind"] == "left_click"
    assert planner.calls[1].history[0].result == "skipped by the user"


def test_an_edit_goes_through_the_reply_parser_and_the_key_check():
    approve, out = approver("e\nkey(keys='ctrl+hyper\x1b')\ne\nrm -rf /\ne\nkey(keys='ctl+s')\n")
    decision = approve(build_action("type", {"content": "x"}), [])
    assert decision.verdict == "approve" and decision.action == build_action("key", {"keys": "ctl+s"})
    shown = out.getvalue()
    assert "not an action: unknown key 'hyper\\x1b'" in shown and "\x1b" not in shown  # refused, shown escaped
    assert shown.count("not an action:") == 2 and "edited: key(keys='ctl+s')" in shown


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
    from agent.geometry import MonitorGeometry
    from agent.trajectory import Outcome, Step

    secret = 'pa"ss\\wörd'  # a quote and a backslash are escaped in JSON text
    secrets = Secrets({"PW": secret})
    recorder = JsonlRecorder(tmp_path, "log in with {{secret:PW}}", scrub=secrets.scrub)
    recorder.write_step(
        Step(
            step=1,
            started_at=0.0,
            screenshot="",
            geometry=MonitorGeometry(left=0, top=0, width=1, height=1),
            thought=f"the password is {secret}",
        )
    )
    recorder.finish(Outcome(status="done", message=f"typed {secret}"))
    written = "".join(p.read_text(encoding="utf-8") for p in recorder.path.rglob("*") if p.is_file())
    assert json.dumps(secret, ensure_ascii=False)[1:-1] not in written and "wörd" not in written
    assert written.count("***") == 2 and "{{secret:PW}}" in written


# --- secrets in every form -------------------------------------------------------------------

SECRET = "pa\"ss\\wörd<&>'x"  # a quote of each kind, a backslash, non-ASCII and HTML characters
API_KEY = "sk-live-\"Key\\Q<&>'Z9"  # ASCII only: it travels in an HTTP header


def forms_of(value: str) -> set[str]:
    """How a value can stand in an artifact, worked out here independently of Secrets."""
    jsons = {json.dumps(value, ensure_ascii=a)[1:-1] for a in (False, True)}
    double = {json.dumps(j, ensure_ascii=a)[1:-1] for j in jsons for a in (False, True)}
    reprs = {repr(value)[1:-1], ascii(value)[1:-1], repr(value + "\"'")[1:-4]}  # ' quotes: "\' ends it
    if '"' not in value:
        reprs.add(repr(value + "'")[1:-2])  # " quotes
    htmls = {html.escape(value, quote=q) for q in (True, False)}
    return {value} | jsons | double | reprs | htmls | {html.escape(f) for f in jsons | double}


def _inner(text: str) -> str:
    return json.loads(json.loads(text)["arguments"])["content"]


# How text reaches an artifact, and how to read it back: the recorder's JSON, a tool call's
# JSON arguments inside it, report.html's escaped raw reply, Python reprs in messages, HTML.
ENCODINGS = {
    "plain": (lambda t: t, lambda s: s),
    "json": (lambda t: json.dumps(t, ensure_ascii=False), json.loads),
    "json ascii": (json.dumps, json.loads),
    "json in json": (lambda t: json.dumps({"arguments": json.dumps({"content": t})}, ensure_ascii=False), _inner),
    "json in json, ascii": (
        lambda t: json.dumps({"arguments": json.dumps({"content": t}, ensure_ascii=False)}),
        _inner,
    ),
    "repr": (repr, ast.literal_eval),
    "repr of a dict": (lambda t: repr({"content": t}), lambda s: ast.literal_eval(s)["content"]),
    "ascii": (ascii, ast.literal_eval),
    "html": (html.escape, html.unescape),
    "html, quotes kept": (lambda t: html.escape(t, quote=False), html.unescape),
    "html of json in json": (
        lambda t: html.escape(json.dumps({"arguments": json.dumps({"content": t})}, ensure_ascii=False, indent=1)),
        lambda s: _inner(html.unescape(s)),
    ),
}


@pytest.mark.parametrize("value", [SECRET, API_KEY, "it's-a-secret\\ö", 'say "hi" \\ ÿ', "tab\there\u2028\x1b[0m🔑"])
@pytest.mark.parametrize("context", ["{}", "it's {}", 'say "{}"', "both ' and \" {}"])
def test_scrub_removes_every_form_a_value_takes(value, context):
    secrets = Secrets({"PW": value})
    for name, (encode, decode) in ENCODINGS.items():
        scrubbed = secrets.scrub(encode(context.format(value)))
        assert decode(scrubbed) == context.format("***"), name
    for form in forms_of(value):
        assert secrets.scrub(f"<{form}>") == "<***>", form


def test_a_secret_inside_a_longer_one_is_scrubbed_whole():
    secrets = Secrets({"A": "hunter2", "B": "hunter2-and-more"})
    assert secrets.scrub("x hunter2-and-more y hunter2 z") == "x *** y *** z"


@pytest.mark.parametrize("value", ["7", "ab1", ""])
def test_short_secrets_are_refused_with_the_reason(value):
    with pytest.raises(UsageError) as info:
        Secrets.from_task("pin {{secret:PIN}}", env={"DESKPILOT_SECRET_PIN": value} if value else {})
    message = str(info.value)
    assert "DESKPILOT_SECRET_PIN" in message
    if value:
        assert "shorter than 4 characters" in message and "corrupting" in message and "longer value" in message
        assert f" {value} " not in message and f"'{value}'" not in message


def test_a_short_api_key_is_not_scrubbed():  # a local server's placeholder key such as 'x' is no secret
    assert Secrets({}, extra=["x", "EMPTY"]).scrub("x marks EMPTY") == "x marks ***"


def _echo_brain(ending: str):
    """A model that repeats the secret and the key everywhere it can, as if read off the screen."""
    said = f"I can read {SECRET} and {API_KEY} on the screen."
    replies = [
        {
            "content": said,
            "tool_calls": [_call("type", {"content": f"Password: {SECRET}\n{API_KEY}"})],
        },
        f"{said} No action here.",  # unusable: recorded as an attempt with its error, then retried
        f"{said}\nkey(keys={SECRET!r})",
        {
            "done": {"content": said, "tool_calls": [_call("DONE", {"answer": f"{SECRET} / {API_KEY}"})]},
            "fail": {"content": said, "tool_calls": [_call("FAIL", {"reason": f"{SECRET} / {API_KEY}"})]},
            "http": FakeHTTP(400, {"error": {"message": f"invalid request: {SECRET} {API_KEY}"}}),
        }[ending],
    ]
    return lambda body: replies.pop(0)


def _call(name: str, arguments: dict) -> dict:
    return {"id": "call_9", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


@pytest.fixture(scope="module", params=["done", "fail", "http"])
def echoed_run(request, tmp_path_factory) -> dict[str, str]:
    """A dry run, with --confirm, against the echoing model, and `view` of its recording:
    every text that left the program, by where it went."""
    ending = request.param
    recordings = tmp_path_factory.mktemp(f"echo-{ending}")
    with FakeModelServer(_echo_brain(ending)) as server:
        run = subprocess.run(
            [sys.executable, "-m", "agent", "run", "sign in with {{secret:PW}}", "--provider", "openai", "--confirm"]
            + ["--base-url", server.base_url, "--api-key", API_KEY, "--screens", str(SCREENS)]
            + ["--recordings", str(recordings)],
            input="a\n" * 3,
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env(DESKPILOT_SECRET_PW=SECRET),
        )
        assert len(server.requests) == 4 and SECRET not in json.dumps(server.requests)
    assert run.returncode == {"done": 0, "fail": 1, "http": 3}[ending], run.stderr
    (recording,) = recordings.iterdir()
    view = subprocess.run(
        [sys.executable, "-m", "agent", "view", str(recording)],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert view.returncode == 0, view.stderr
    files = {
        str(p.relative_to(recordings)): p.read_bytes().decode("utf-8", "replace")
        for p in recording.rglob("*")
        if p.is_file()
    }
    texts = {"run stdout": run.stdout, "run stderr": run.stderr, "view output": view.stdout + view.stderr, **files}
    return {name: text for name, text in texts.items() if text}


def _leaks(texts: dict[str, str]) -> list[str]:
    forms = forms_of(SECRET) | forms_of(API_KEY) | {"wörd", "w\\u00f6rd", "Key\\"}  # and no cut-off part
    return sorted(f"{name}: {form!r}" for name, text in texts.items() for form in forms if form in text)


# Lines agent/cli.py prints without Secrets.scrub, or scrubs after cutting: DryRunExecutor(log=print),
# Approver(...) without scrub=secrets.scrub, step_line's detail[:40]. Checked on their own below.
_UNSCRUBBED_CLI_LINES = re.compile(r"(dry-run: would |planned: |step +\d+ ).*")


def test_no_form_of_a_secret_or_the_key_leaves_the_program(echoed_run):
    texts = {name: _UNSCRUBBED_CLI_LINES.sub("", text) for name, text in echoed_run.items()}
    assert any(name.endswith("report.html") for name in texts) and any(n.endswith("steps.jsonl") for n in texts)
    assert any(name.endswith("outcome.json") for name in texts)
    assert sum(text.count("***") for text in texts.values()) >= 10  # the echoes were there, and scrubbed
    assert _leaks(texts) == []


def test_the_dry_run_and_approval_lines_are_scrubbed(echoed_run):
    lines = "\n".join(m.group(0) for m in _UNSCRUBBED_CLI_LINES.finditer(echoed_run["run stdout"]))
    assert lines.count("dry-run: would") == 2 and lines.count("planned: ") == 2 and lines.count("step ") == 3
    assert _leaks({"run stdout": lines}) == []
