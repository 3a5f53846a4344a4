"""PyAutoGuiExecutor against a real X server: Xvfb + openbox + the Tk target app.

Real XTEST input; every assertion is on what the app reports it received. Skipped where
Xvfb is not installed. The last tests start a second, larger display and check that the
executors of both displays keep working in one process.
"""

from __future__ import annotations

import pytest

from actions.pyautogui_executor import PyAutoGuiExecutor, x11_display_name
from actions.schema import (
    Done,
    Fail,
    Hover,
    Key,
    LeftClick,
    LeftDoubleClick,
    LeftDrag,
    MiddleClick,
    RightClick,
    Scroll,
    Type,
    Wait,
)
from agent.errors import DisplayError, Interrupted
from tests.live_support import TargetApp, have_xvfb, xvfb_display

UNICODE = "Crème brûlée, Grüße 世界 ✓"
BOX = "[500,500]"  # model-space boxes are not used by executors; screen points are

live = pytest.mark.live


@pytest.fixture(scope="module")
def desktop():
    if not have_xvfb():
        pytest.skip("Xvfb is not installed: live executor tests need an X server")
    with xvfb_display(1280, 800) as display:
        with TargetApp(geometry="720x520+140+90") as app:
            executor = PyAutoGuiExecutor(wait_seconds=0.2)
            yield display, app, executor
            executor.close()


@pytest.fixture
def app(desktop):
    return desktop[1]


@pytest.fixture
def ex(desktop):
    executor = desktop[2]
    executor.should_stop = lambda: False
    return executor


def new_events(app, since, predicate, timeout=5.0):
    """Wait until ``predicate`` holds for the events after mark ``since``; return those."""
    return app.wait_for(predicate, timeout, since=since)


def of(kind, events):
    return [e for e in events if e["event"] == kind]


def focus_empty_entry(app, ex):
    """Click the entry, wait until the app has the click, select all and delete."""
    mark = app.mark()
    ex.execute(LeftClick(start_box=BOX), [app.center("entry")])
    new_events(app, mark, lambda evs: of("click", evs))
    ex.execute(Key(keys="ctrl+slash"), [])  # Tk's select-all
    ex.execute(Key(keys="BackSpace"), [])
    new_events(app, mark, lambda evs: [e for e in of("key", evs) if e["keysym"] == "BackSpace"])


@live
def test_left_click_lands_on_the_ok_button(app, ex):
    x, y = app.center("ok")
    mark = app.mark()
    ex.execute(LeftClick(start_box=BOX, element_info="OK"), [(x, y)])
    click = of("click", new_events(app, mark, lambda evs: of("click", evs)))[0]
    assert (click["widget"], click["button"]) == ("ok", 1)
    assert abs(click["x_root"] - x) <= 1 and abs(click["y_root"] - y) <= 1


@live
@pytest.mark.parametrize(("action", "button"), [(RightClick, 3), (MiddleClick, 2)])
def test_right_and_middle_click(app, ex, action, button):
    mark = app.mark()
    ex.execute(action(start_box=BOX), [app.center("ok")])
    click = of("click", new_events(app, mark, lambda evs: of("click", evs)))[0]
    assert (click["widget"], click["button"]) == ("ok", button)


@live
def test_double_click(app, ex):
    mark = app.mark()
    ex.execute(LeftDoubleClick(start_box=BOX), [app.center("ok")])
    events = new_events(app, mark, lambda evs: of("double_click", evs))
    assert of("double_click", events)[0]["widget"] == "ok"
    assert [c["widget"] for c in of("click", events)] == ["ok", "ok"]


@live
def test_hover_moves_the_pointer_without_clicking(app, ex):
    import pyautogui

    mark = app.mark()
    target = app.center("canvas")
    ex.execute(Hover(start_box=BOX), [target])
    assert tuple(pyautogui.position()) == target
    assert not of("click", app.events()[mark:])


@live
def test_key_combos_reach_the_entry(app, ex):
    focus_empty_entry(app, ex)
    mark = app.mark()
    ex.execute(Type(content="abc"), [])
    new_events(app, mark, lambda evs: of("entry", evs) and of("entry", evs)[-1]["text"] == "abc")
    ex.execute(Key(keys="ctrl+a"), [])
    ctrl_a = new_events(app, mark, lambda evs: [e for e in of("key", evs) if e["keysym"] == "a" and e["state"] & 4])
    assert [e for e in of("key", ctrl_a) if e["keysym"] == "a" and e["state"] & 4]
    ex.execute(Key(keys="End"), [])
    ex.execute(Key(keys="BackSpace"), [])
    new_events(app, mark, lambda evs: of("entry", evs)[-1]["text"] == "ab")
    ex.execute(Key(keys="shift+Home"), [])  # select all, then type over it
    ex.execute(Type(content="Z"), [])
    new_events(app, mark, lambda evs: of("entry", evs)[-1]["text"] == "Z")


@live
def test_unicode_typing_arrives_exactly(app, ex):
    focus_empty_entry(app, ex)
    mark = app.mark()
    ex.execute(Type(content=UNICODE), [])
    events = new_events(app, mark, lambda evs: of("entry", evs) and of("entry", evs)[-1]["text"] == UNICODE)
    # Every character once, in order: each change of the text added the next character.
    texts = [e["text"] for e in of("entry", events)]
    assert texts == [UNICODE[: i + 1] for i in range(len(UNICODE))]


@live
def test_typing_more_distinct_characters_than_spare_keycodes(app, ex):
    text = "".join(chr(0x4E00 + 37 * i) for i in range(30)) + " ¿Qué? “ok” 😀 αβγ"
    assert len(set(text)) > len(ex._typer.spare_keycodes)
    focus_empty_entry(app, ex)
    mark = app.mark()
    ex.execute(Type(content=text), [])
    new_events(app, mark, lambda evs: of("entry", evs) and of("entry", evs)[-1]["text"] == text, timeout=10)


@live
def test_typing_stops_between_characters_when_asked(app, ex):
    focus_empty_entry(app, ex)
    typed = []
    ex.should_stop = lambda: len(typed) > 3 or typed.append(1)
    with pytest.raises(Interrupted):
        ex.execute(Type(content="abcdefghij"), [])
    mark = app.mark()
    ex.should_stop = lambda: False
    ex.execute(Type(content="!"), [])
    events = new_events(app, mark, lambda evs: of("entry", evs))
    assert of("entry", events)[-1]["text"] == "abcd!"


@live
def test_drag_on_the_canvas(app, ex):
    c = app.rect("canvas")
    start = (c["x"] + 40, c["y"] + 30)
    end = (c["x"] + c["width"] - 60, c["y"] + c["height"] - 25)
    mark = app.mark()
    ex.execute(LeftDrag(start_box=BOX, end_box=BOX), [start, end])
    drag = of("drag", new_events(app, mark, lambda evs: of("drag", evs)))[0]
    assert all(abs(a - b) <= 2 for a, b in zip(drag["start"] + drag["end"], start + end))
    assert drag["motions"] >= 3  # the app saw the pointer travel, not jump


@live
def test_scroll_up_and_down(app, ex):
    mark = app.mark()
    ex.execute(Scroll(start_box=BOX, direction="up", step=3), [app.center("canvas")])
    ex.execute(Scroll(start_box=BOX, direction="down", step=2), [app.center("canvas")])
    events = new_events(app, mark, lambda evs: len(of("scroll", evs)) >= 5)
    assert [e["direction"] for e in of("scroll", events)] == ["up"] * 3 + ["down"] * 2
    assert not of("click", events)


@live
def test_wait_done_and_fail_send_no_input(app, ex):
    mark = app.mark()
    ex.execute(Wait(), [])
    ex.execute(Done(answer="42"), [])
    ex.execute(Fail(reason="no"), [])
    assert app.events()[mark:] == []
    ex.should_stop = lambda: True
    with pytest.raises(Interrupted):
        ex.execute(Wait(), [])


@live
def test_corner_target_does_not_trip_the_fail_safe(app, ex):
    ex.execute(Hover(start_box=BOX), [(0, 0)])
    ex.execute(Hover(start_box=BOX), [app.center("canvas")])  # would raise if at (0, 0)


@live
def test_a_second_display_of_another_size_in_the_same_process(desktop):
    _, first_app, first = desktop
    with xvfb_display(2560, 1440):
        with TargetApp(geometry="1400x900+700+300") as app:
            big = PyAutoGuiExecutor()
            try:
                import pyautogui

                assert tuple(pyautogui.size()) == (2560, 1440)
                x, y = app.center("ok")
                assert x > 1280  # only reachable on the big screen
                mark = app.mark()
                big.execute(LeftClick(start_box=BOX), [(x, y)])
                click = of("click", new_events(app, mark, lambda evs: of("click", evs)))[0]
                assert (click["widget"], click["x_root"], click["y_root"]) == ("ok", x, y)
                # The first display's executor re-points pyautogui at its own server.
                mark = first_app.mark()
                first.execute(LeftClick(start_box=BOX), [first_app.center("ok")])
                assert tuple(pyautogui.size()) == (1280, 800)
                assert of("click", new_events(first_app, mark, lambda evs: of("click", evs)))[0]["widget"] == "ok"
                big.execute(Type(content="x"), [])  # and back again
                assert tuple(pyautogui.size()) == (2560, 1440)
            finally:
                big.close()


def test_no_display_is_a_display_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(DisplayError, match="no X display: set DISPLAY or use --dry-run --screens"):
        x11_display_name()
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    with pytest.raises(DisplayError, match="Wayland"):
        PyAutoGuiExecutor()
    monkeypatch.delenv("WAYLAND_DISPLAY")
    monkeypatch.setenv("DISPLAY", ":4242")
    with pytest.raises(DisplayError, match="cannot open X display ':4242'"):
        PyAutoGuiExecutor()
