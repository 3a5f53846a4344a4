"""``deskpilot mcp``: the MCP SDK's own stdio client starts the server (dry, on mocked screens,
against the fake model server) and calls every tool; the session's recording is then loaded,
checked by replay and viewed. One live test clicks a real Tk widget through MCP on Xvfb."""

from __future__ import annotations

import base64
import io
import os
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from agent.fakeserver import FakeModelServer, images_in
from agent.geometry import image_to_model
from agent.replay.offline import check
from agent.report import write_report
from agent.trajectory import load
from tests.conftest import cli_env
from tests.fake_brains import CYAN, MAGENTA, FormBrain, find_color, reply
from tests.live_support import TargetApp, have_xvfb, xvfb_display

mcp = pytest.importorskip("mcp")
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

SCREENS = Path(__file__).parent / "screens" / "dialog"
TOOLS = {
    "screenshot", "locate", "click", "double_click", "right_click", "drag", "scroll", "type_text", "press_keys",
    "run_task",
}  # fmt: skip
COLOURS = {"name field": CYAN, "OK button": MAGENTA}


def field(result: Any, name: str) -> Any:
    """A result field under its mcp 2 name or its mcp 1 (camelCase) one."""
    camel = re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)
    return getattr(result, name, None) if hasattr(result, name) else getattr(result, camel)


def prompt(body: dict) -> str:
    return "".join(p.get("text", "") for p in body["messages"][0]["content"] if p["type"] == "text")


def box_model(image: Image.Image, colour: tuple[int, int, int]) -> list[int]:
    x1, y1, x2, y2 = find_color(image, colour)
    return [*image_to_model((x1, y1), image.size), *image_to_model((x2, y2), image.size)]


class DesktopBrain:
    """Answers deskpilot's grounding tasks with the box of the named element, as the kind of
    action asked for; any other task (run_task) like FormBrain."""

    def __init__(self, text: str = "report.txt") -> None:
        self.form = FormBrain(text)

    def __call__(self, body: dict) -> Any:
        text, image = prompt(body), images_in(body)[-1]
        drag = re.search(r"Drag from this element: (.*)\nto this element: (.*)\n", text)
        find = re.search(r"Find this element on the screenshot: (.*)\n", text)
        if drag:
            start, end = (box_model(image, COLOURS[name]) for name in drag.groups())
            return reply(("left_drag", {"start_box": str(start), "end_box": str(end)}), tools="tools" in body)
        if find:
            kind = re.search(r"answer with one (\w+)\(", text).group(1)
            args: dict[str, Any] = {"start_box": str(box_model(image, COLOURS[find.group(1)]))}
            if kind == "scroll":
                asked = re.search(r"direction='(\w+)', step=(\d+)", text)
                args.update(direction=asked.group(1), step=int(asked.group(2)))
            return reply((kind, args), tools="tools" in body)
        return self.form(body)


def mcp_args(server: FakeModelServer, recordings: Path, *extra: str) -> list[str]:
    return ["-m", "agent", "mcp", "--provider", "vllm", "--base-url", server.base_url,
            "--recordings", str(recordings), *extra]  # fmt: skip


async def session(
    args: list[str], calls: list[tuple[str, dict]], env: dict | None = None
) -> tuple[set[str], list[Any]]:
    """Start ``python ARGS`` as an MCP server with the SDK's stdio client; list its tools and make ``calls``."""
    params = StdioServerParameters(command=sys.executable, args=args, env=cli_env(**(env or {})))
    results = []
    with open(os.devnull, "w") as quiet:
        async with stdio_client(params, errlog=quiet) as (read, write):
            async with ClientSession(read, write) as client:
                await client.initialize()
                tools = {tool.name for tool in (await client.list_tools()).tools}
                for name, arguments in calls:
                    results.append(await client.call_tool(name, arguments))
    return tools, results


def text(result: Any) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


def test_every_tool_through_the_sdk_client(tmp_path):
    calls = [
        ("screenshot", {}),
        ("locate", {"description": "name field"}),
        ("click", {"description": "name field"}),
        ("type_text", {"text": "hello {{secret:PW}}"}),
        ("click", {"x": 700, "y": 520}),
        ("double_click", {"x": 500, "y": 398}),
        ("right_click", {"description": "OK button"}),
        ("drag", {"from_description": "name field", "to_description": "OK button"}),
        ("drag", {"x1": 450, "y1": 398, "x2": 830, "y2": 398}),
        ("scroll", {"direction": "down", "amount": 3, "description": "name field"}),
        ("scroll", {"direction": "up", "x": 640, "y": 300}),
        ("press_keys", {"keys": "ctrl+a"}),
        ("press_keys", {"keys": "ctrl+w"}),  # risky: refused without --allow-risky
        ("click", {"x": 5000, "y": 10}),  # off the screen: refused
        ("click", {}),  # neither a description nor a pixel
        ("run_task", {"task": "name the file report.txt and press OK", "max_steps": 8}),
    ]
    secret = "s3cr3t-Value-42"
    with FakeModelServer(DesktopBrain()) as server:
        args = mcp_args(server, tmp_path, "--dry-run", "--screens", str(SCREENS))
        tools, results = anyio.run(session, args, calls, {"DESKPILOT_SECRET_PW": secret})
    assert tools == TOOLS
    errors = [field(r, "is_error") for r in results]
    assert errors == [False] * 12 + [True] * 3 + [False], [text(r) for r in results]
    shot, located, click, typed, at, double, right, drag, drag_px, scroll, scroll_px, keys = results[:12]

    image = next(c for c in shot.content if c.type == "image")
    assert field(image, "mime_type") == "image/jpeg"
    assert Image.open(io.BytesIO(base64.b64decode(image.data))).size == (1280, 800)  # within the image budget
    assert "screen pixel (0 + x * 1, 0 + y * 1)" in text(shot)

    box = field(located, "structured_content") or __import__("json").loads(text(located))
    x1, y1, x2, y2 = box["box_thousandths"]
    assert box["center_screen"] == [640, 398] and 340 <= x1 < x2 <= 660 and 470 <= y1 < y2 <= 525
    # the cyan field is pixels 441-839 x 381-415; a thousandth of 1280 is 1.28 pixels
    assert all(abs(got - real) <= 2 for got, real in zip(box["box_screen"], [441, 381, 839, 415])), box

    assert text(click).startswith("left_click at (640, 398)") and "dry run" in text(click)
    assert text(typed).startswith("type 'hello {{secret:PW}}'")  # the placeholder, never the value
    assert text(at).startswith("left_click at (700, 520)") and text(double).startswith(
        "left_double_click at (500, 398)"
    )
    assert text(right).startswith("right_click at (640, 524)")
    assert text(drag).startswith("left_drag at (640, 398) -> (640, 524)")
    assert text(drag_px).startswith("left_drag at (450, 398) -> (830, 398)")
    assert text(scroll).startswith("scroll down 3 at (640, 398)") and text(scroll_px).startswith(
        "scroll up 5 at (640, 300)"
    )
    assert text(keys).startswith("key 'ctrl+a'")
    risky, outside, neither, task = results[12:]
    assert "--allow-risky" in text(risky) and "outside the screen area" in text(outside)
    assert "either a description or both x and y" in text(neither)
    outcome = field(task, "structured_content") or __import__("json").loads(text(task))
    assert outcome["status"] == "done" and outcome["steps"] == 4

    (folder,) = tmp_path.iterdir()
    assert outcome["recording"] == str(folder)
    recording = load(folder)
    assert recording.header.mode == "mcp" and recording.outcome.status == "done"
    # one step per call (the call with no arguments never got that far), and run_task's four after them
    assert len(recording.steps) == 14 + 4 and [s.step for s in recording.steps] == list(range(1, 19))
    assert [s.decision for s in recording.steps[:14]] == [None, "refused"] + [None] * 10 + ["refused"] * 2
    clicks = [(s.action or {}).get("kind") for s in recording.steps if s.decision is None]
    assert clicks[:12] == [
        None, "left_click", "type", "left_click", "left_double_click", "right_click", "left_drag", "left_drag",
        "scroll", "scroll", "key", "left_click",
    ]  # fmt: skip
    assert check(recording) == []  # every model reply re-parses and re-grounds to the recorded action
    written = "".join(p.read_text() for p in folder.rglob("*.json*"))
    assert secret not in written and "{{secret:PW}}" in written
    assert secret not in "".join(text(r) for r in results)
    assert write_report(folder).stat().st_size > 0


def test_a_risky_combination_passes_with_allow_risky(tmp_path):
    with FakeModelServer(DesktopBrain()) as server:
        args = mcp_args(server, tmp_path, "--dry-run", "--screens", str(SCREENS), "--allow-risky")
        _, (result,) = anyio.run(session, args, [("press_keys", {"keys": "ctrl+w"})])
    assert not field(result, "is_error") and text(result).startswith("key 'ctrl+w'")


def test_the_session_step_budget_refuses_further_calls(tmp_path):
    calls = [("press_keys", {"keys": "a"}), ("press_keys", {"keys": "b"}), ("press_keys", {"keys": "c"})]
    with FakeModelServer(DesktopBrain()) as server:
        args = mcp_args(server, tmp_path, "--dry-run", "--screens", str(SCREENS), "--max-steps", "2")
        _, results = anyio.run(session, args, calls)
    assert [field(r, "is_error") for r in results] == [False, False, True]
    assert "step budget (2) was used up" in text(results[2])
    assert load(next(tmp_path.iterdir())).outcome.status == "max_steps"


def test_without_the_sdk_it_says_how_to_install_it(tmp_path):
    blocker = tmp_path / "mcp.py"
    blocker.write_text("raise ImportError('no mcp here')\n")  # shadows the installed SDK
    import subprocess

    env = cli_env()
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "mcp", "--dry-run", "--screens", str(SCREENS), "--provider", "vllm"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "pip install 'deskpilot[mcp]'" in proc.stderr and "Traceback" not in proc.stderr


def inside(rect: dict, x: int, y: int) -> bool:
    return rect["x"] <= x < rect["x"] + rect["width"] and rect["y"] <= y < rect["y"] + rect["height"]


@pytest.mark.live
@pytest.mark.skipif(not have_xvfb(), reason="needs Xvfb and openbox")
def test_live_clicks_and_typing_reach_a_real_window_through_mcp(tmp_path):
    with xvfb_display(1280, 800), TargetApp(tmp_path / "events.jsonl") as app:
        canvas_x, canvas_y = app.center("canvas")
        calls = [
            ("click", {"description": "OK button"}),
            ("click", {"description": "name field"}),
            ("type_text", {"text": "via MCP ✓"}),
            ("click", {"x": canvas_x, "y": canvas_y}),
        ]
        with FakeModelServer(DesktopBrain()) as server:
            _, results = anyio.run(
                session, mcp_args(server, tmp_path / "rec"), calls, {"DISPLAY": os.environ["DISPLAY"]}
            )
        assert [field(r, "is_error") for r in results] == [False] * 4, [text(r) for r in results]
        events = app.wait_for(lambda evs: sum(e["event"] == "click" for e in evs) >= 3, 10)
    clicks = [e for e in events if e["event"] == "click"]
    assert [(c["widget"], c["button"]) for c in clicks] == [("ok", 1), ("entry", 1), ("canvas", 1)]
    assert inside(app.rect("ok"), clicks[0]["x_root"], clicks[0]["y_root"])
    assert (clicks[2]["x_root"], clicks[2]["y_root"]) == (canvas_x, canvas_y)  # a pixel is clicked exactly
    assert [e["text"] for e in events if e["event"] == "entry"][-1] == "via MCP ✓"
    recording = load(next((tmp_path / "rec").iterdir()))
    assert recording.header.mode == "mcp" and len(recording.steps) == 4 and check(recording) == []


def test_replay_simulate_explains_it_does_not_apply_to_an_mcp_session(tmp_path):
    import subprocess

    with FakeModelServer(DesktopBrain()) as server:
        args = mcp_args(server, tmp_path, "--dry-run", "--screens", str(SCREENS))
        anyio.run(session, args, [("click", {"x": 10, "y": 10})])
    folder = next(tmp_path.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "replay", str(folder), "--mode", "simulate"],
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "use --mode check or --mode execute" in proc.stderr


@pytest.mark.live
@pytest.mark.skipif(not have_xvfb(), reason="needs Xvfb and openbox")
def test_the_kill_hotkey_stops_an_api_task_in_a_thread_and_refuses_mcp_calls_after_it(tmp_path):
    import subprocess
    import threading
    import time

    from agent import Agent
    from agent.errors import Interrupted

    def press_kill_hotkey() -> None:
        subprocess.run(["xdotool", "key", "--delay", "60", "Escape", "Escape", "Escape"], check=True)

    def slow_wait(body: dict) -> str:
        time.sleep(0.2)
        return "WAIT()"

    with xvfb_display(1280, 800), FakeModelServer(slow_wait) as server:
        # the API, in a worker thread: the task stops, the main thread is not interrupted
        caught: list[BaseException] = []
        with Agent(provider="vllm", base_url=server.base_url, dry_run=True, recordings=tmp_path / "api") as agent:
            worker = threading.Thread(target=lambda: _catch(caught, agent.run, "wait for ever"))
            worker.start()
            while len(server.requests) < 2:
                time.sleep(0.05)
            press_kill_hotkey()
            worker.join(30)
            assert not worker.is_alive() and len(caught) == 1 and isinstance(caught[0], Interrupted)
            assert caught[0].result.outcome.status == "interrupted"  # type: ignore[attr-defined]
            with pytest.raises(Interrupted):  # the Agent stays stopped
                agent.run("again")

        # MCP: after the hotkey every acting call is refused, and the session says it was stopped
        async def calls_around_the_hotkey() -> list[Any]:
            params = StdioServerParameters(
                command=sys.executable,
                args=mcp_args(server, tmp_path / "mcp", "--dry-run"),
                env=cli_env(DISPLAY=os.environ["DISPLAY"]),
            )
            with open(os.devnull, "w") as quiet:
                async with stdio_client(params, errlog=quiet) as (read, write):
                    async with ClientSession(read, write) as client:
                        await client.initialize()
                        before = await client.call_tool("press_keys", {"keys": "a"})
                        await anyio.to_thread.run_sync(press_kill_hotkey)
                        await anyio.sleep(0.5)
                        after = await client.call_tool("click", {"x": 10, "y": 10})
                        return [before, after]

        before, after = anyio.run(calls_around_the_hotkey)
    assert not field(before, "is_error") and field(after, "is_error")
    assert "stopped by the kill hotkey" in text(after)
    assert load(next((tmp_path / "mcp").iterdir())).outcome.status == "interrupted"


def _catch(caught: list[BaseException], function: Any, *args: Any) -> None:
    try:
        function(*args)
    except BaseException as exc:  # noqa: B036 - the test inspects whatever stopped the task
        caught.append(exc)
