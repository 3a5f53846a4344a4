"""``deskpilot doctor``: the desktop checks on Xvfb (one monitor and two), the endpoint checks
against fake servers, and the report's exit code and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest

from agent.config import Settings
from agent.doctor import TARGET_BOX, Check, Report, _keyboard, endpoint_checks, pointer_points
from agent.fakeserver import FakeModelServer, completion, images_in
from tests.conftest import cli_env
from tests.fake_brains import reply, thousandths_of
from tests.live_support import have_xvfb, set_monitors, xvfb_display

RED = (220, 30, 30)


def doctor(*args: str, display: str | None = None) -> tuple[int, dict[str, Any], str]:
    env = cli_env(**({"DISPLAY": display} if display else {}))
    if display is None:
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "doctor", "--json", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_pointer_points_are_inset_corners_and_the_centre_in_screen_space():
    monitor = {"left": -1920, "top": 0, "width": 1920, "height": 1080}
    assert pointer_points(monitor) == [(-1915, 5), (-6, 5), (-1915, 1074), (-6, 1074), (-960, 540)]


class FakeKeyboardDisplay:
    """Just what the keyboard check reads: _XKB_RULES_NAMES and the pointer's state mask."""

    def __init__(self, layouts: str, group: int) -> None:
        self.layouts, self.group = layouts, group

    def screen(self) -> Any:
        return self

    @property
    def root(self) -> Any:
        return self

    def intern_atom(self, name: str) -> int:
        return 1

    def get_full_property(self, atom: int, kind: int) -> Any:
        return type("Prop", (), {"value": f"evdev\0pc105\0{self.layouts}\0,\0grp:alt_shift_toggle\0".encode()})

    def query_pointer(self) -> Any:
        return type("Pointer", (), {"mask": (self.group << 13) | 0x10})  # Mod2 (NumLock) on too


def test_a_second_layout_active_is_a_problem_naming_both():
    check = _keyboard(FakeKeyboardDisplay("us,ru", 1))
    assert check.status == "problem" and "active ru (group 2)" in check.summary
    assert "switch to us" in check.fix and check.data["layout"] == "us,ru" and check.data["group"] == 1
    assert _keyboard(FakeKeyboardDisplay("us,ru", 0)).status == "ok"


def test_without_a_display_the_session_is_the_problem_and_the_rest_is_skipped():
    code, report, _ = doctor("--provider", "vllm")
    checks = by_name(report)
    assert code == 1 and not report["ok"]
    assert checks["session"]["status"] == "problem" and "DISPLAY" in checks["session"]["fix"]
    assert {checks[n]["status"] for n in ("monitors", "pointer", "hotkeys", "keyboard")} == {"skipped"}
    assert checks["provider"]["status"] == "ok"


def test_a_missing_key_is_a_provider_problem_with_the_variable_to_set():
    code, report, _ = doctor("--provider", "siliconflow")
    assert code == 1 and "SILICONFLOW_API_KEY" in by_name(report)["provider"]["fix"]


def test_the_report_text_puts_the_fix_under_the_problem(capsys, monkeypatch):
    from agent.cli import main

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["doctor", "--provider", "vllm"]) == 1
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("PROBLEM  session"))
    assert "fix: set DISPLAY" in lines[at + 1] and lines[-1] == "deskpilot doctor: 1 problem: session"


# --- the endpoint -----------------------------------------------------------------------------


def red_button_brain(body: dict[str, Any]) -> Any:
    """A correct model: clicks the red button it is shown, by tool call when offered."""
    box = thousandths_of(images_in(body)[-1], RED)
    return reply(("left_click", {"start_box": str(box), "element_info": "OK"}), tools="tools" in body)


def transport(answer) -> httpx.MockTransport:  # type: ignore[no-untyped-def]
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        result = answer(body)
        if isinstance(result, httpx.Response):
            return result
        return httpx.Response(200, json=completion(result))

    return httpx.MockTransport(handler)


def statuses(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.status for c in checks}


SETTINGS = Settings.resolve("vllm", max_retries=0)


def test_a_good_endpoint_grounds_the_red_button():
    checks = endpoint_checks(SETTINGS, transport(red_button_brain))
    assert statuses(checks) == {
        "endpoint: key": "ok",
        "endpoint: model": "ok",
        "endpoint: tools": "ok",
        "endpoint: grounding": "ok",
    }
    x, y = checks[-1].data["point_image"]
    assert TARGET_BOX[0] <= x <= TARGET_BOX[2] and TARGET_BOX[1] <= y <= TARGET_BOX[3]
    assert checks[-1].data["protocol"] == "tools" and checks[-1].data["prompt_tokens"] > 0


def test_a_server_rejecting_tools_falls_back_and_says_so():
    def answer(body: dict[str, Any]) -> Any:
        if "tools" in body:
            return httpx.Response(
                400, json={"error": {"message": '"auto" tool choice requires --enable-auto-tool-choice'}}
            )
        return red_button_brain(body)

    checks = endpoint_checks(SETTINGS, transport(answer))
    tools = checks[2]
    assert tools.status == "info" and "fell back to the text format" in tools.summary
    assert checks[-1].status == "ok" and checks[-1].data["protocol"] == "text"


def test_a_rejected_key_and_an_unknown_model_are_problems_with_fixes():
    key = endpoint_checks(SETTINGS, transport(lambda b: httpx.Response(401, json={"error": "Invalid token"})))
    assert statuses(key) == {"endpoint: key": "problem", "endpoint: model": "skipped"}
    assert "Invalid token" in key[0].fix
    model = endpoint_checks(
        SETTINGS, transport(lambda b: httpx.Response(400, json={"error": {"message": "Model does not exist."}}))
    )
    assert statuses(model)["endpoint: model"] == "problem" and "--model" in model[1].fix


def test_pixels_instead_of_thousandths_miss_the_button():
    # the button's centre in image pixels, answered as if it were thousandths
    x, y = (TARGET_BOX[0] + TARGET_BOX[2]) // 2, (TARGET_BOX[1] + TARGET_BOX[3]) // 2
    checks = endpoint_checks(SETTINGS, transport(lambda b: f"left_click(start_box='[{x},{y}]')"))
    assert checks[-1].status == "problem" and "thousandths" in checks[-1].fix


def test_an_unreadable_reply_is_kept_for_the_report():
    checks = endpoint_checks(SETTINGS, transport(lambda b: "I would click the button."))
    assert checks[-1].status == "problem" and checks[-1].data["reply"] == "I would click the button."


def test_report_exit_status_follows_problems():
    assert Report([Check("a", "ok", ""), Check("b", "info", "")]).as_dict()["ok"]
    assert not Report([Check("a", "problem", "", "fix it")]).as_dict()["ok"]


# --- live -------------------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(not have_xvfb(), reason="needs Xvfb")
def test_doctor_on_xvfb_with_the_endpoint():
    with xvfb_display(1280, 800) as name, FakeModelServer(red_button_brain) as server:
        code, report, err = doctor(
            "--provider", "vllm", "--base-url", server.base_url, "--endpoint", display=name
        )  # fmt: skip
    checks = by_name(report)
    assert code == 0, json.dumps(report, indent=1) + err
    assert checks["session"]["data"]["type"] == "x11" and checks["session"]["data"]["DISPLAY"] == name
    assert [(m["index"], m["width"], m["height"], m["scale"]) for m in checks["monitors"]["data"]["monitors"]] == [
        (0, 1280, 800, 1.0),
        (1, 1280, 800, 1.0),
    ]
    assert checks["pyautogui"]["data"]["size"] == [1280, 800] and checks["pynput"]["data"]["backend"] == "xorg"
    assert checks["keyboard"]["data"]["group"] == 0 and checks["keyboard"]["data"]["layout"]
    assert checks["hotkeys"]["status"] == "ok" and checks["x extensions"]["data"]["XTEST"]
    points = checks["pointer"]["data"]["points"]
    assert len(points) == 5 and all(p["xlib"] == p["target"] == p["pynput"] == p["pyautogui"] for p in points)
    assert checks["endpoint: grounding"]["status"] == "ok"


@pytest.mark.live
@pytest.mark.skipif(not have_xvfb(), reason="needs Xvfb")
def test_doctor_on_two_monitors_checks_the_pointer_on_each():
    with xvfb_display(2304, 800) as name:  # openbox stays connected: the server keeps the monitors
        set_monitors([(0, 0, 1280, 800), (1280, 0, 1024, 768)])
        code, report, err = doctor("--provider", "vllm", display=name)
    checks = by_name(report)
    assert code == 0, json.dumps(report, indent=1) + err
    monitors = checks["monitors"]["data"]["monitors"]
    assert [(m["index"], m["left"], m["top"], m["width"], m["height"]) for m in monitors] == [
        (0, 0, 0, 2304, 800),
        (1, 0, 0, 1280, 800),
        (2, 1280, 0, 1024, 768),
    ]
    assert monitors[1]["primary"] and monitors[1]["dpi"] == 96 and monitors[2]["dpi"] == 96
    points = checks["pointer"]["data"]["points"]
    assert [p["monitor"] for p in points] == [1] * 5 + [2] * 5
    assert points[6]["target"] == [2298, 5] and all(p["offset"] == 0 for p in points)
    assert "2 (--monitor N, 0 = all)" in checks["monitors"]["summary"]
