"""Scoping a run to one window (agent/window.py): pattern matching, and the live gate on Xvfb + openbox.

The live tests share one Xvfb with the Tk target app (WM_CLASS "tk", "Tk"; title
"deskpilot target"); tests that need another window start a second TargetApp and close it.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from agent.capture import MssScreen
from agent.errors import DisplayError, UsageError
from agent.geometry import ground, image_to_model
from agent.window import WindowInfo, WindowScope, list_windows, match_windows
from tests.live_support import TargetApp, have_xvfb, xvfb_display

MAGENTA, CYAN = (255, 0, 255), (0, 255, 255)

WINDOWS = [
    WindowInfo(0x100001, ("xterm", "XTerm"), "user@host: ~/src", 0, 0, 800, 600),
    WindowInfo(0x200002, ("Navigator", "firefox"), "Inbox - Mail - Mozilla Firefox", 100, 50, 1200, 900),
    WindowInfo(0x300003, ("gnome-terminal-server", "Gnome-terminal"), "Terminal", 10, 10, 700, 500),
    WindowInfo(0x400004, ("code", "Code"), "notes: xterm.md - Visual Studio Code", 0, 0, 1600, 1000),
    WindowInfo(0x500005, (), "untitled: draft", 5, 5, 300, 200),
]


def ids(windows: list[WindowInfo]) -> list[int]:
    return [w.id for w in windows]


# --- match_windows -------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("firefox", [0x200002]),  # class name
        ("NAVIGATOR", [0x200002]),  # instance name, any case
        ("inbox", [0x200002]),  # title
        ("term", [0x100001, 0x300003, 0x400004]),  # class of two, title of one; order kept
        ("xterm", [0x100001, 0x400004]),  # a class and a title
        ("class:xterm", [0x100001]),  # the code window only has it in its title
        ("CLASS:Term", [0x100001, 0x300003]),
        ("title:xterm", [0x400004]),
        ("title:terminal", [0x300003]),
        ("untitled: draft", [0x500005]),  # an unknown prefix is part of the text
        ("id:0x300003", [0x300003]),
        ("id:3145731", [0x300003]),  # decimal too
        ("id:0x999", []),
        ("safari", []),
    ],
)
def test_match_windows(pattern, expected):
    assert ids(match_windows(pattern, WINDOWS)) == expected


@pytest.mark.parametrize("pattern", ["", "   ", "class:", "title: ", "id:"])
def test_a_pattern_that_names_nothing_is_a_usage_error(pattern):
    with pytest.raises(UsageError, match="names no window"):
        match_windows(pattern, WINDOWS)


def test_a_bad_id_is_a_usage_error():
    with pytest.raises(UsageError, match="an id is a number"):
        match_windows("id:firefox", WINDOWS)


def test_no_display_is_a_display_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(DisplayError, match="no X display"):
        WindowScope("firefox")
    with pytest.raises(DisplayError, match="cannot open the X display"):
        list_windows(":4999")


# --- live ------------------------------------------------------------------------------

live = pytest.mark.live


@pytest.fixture(scope="module")
def desktop():
    if not have_xvfb():
        pytest.skip("Xvfb is not installed: live window tests need an X server")
    with xvfb_display(1280, 800) as display:
        with TargetApp(geometry="720x520+140+90") as app:
            yield display, app


@pytest.fixture
def app(desktop):
    return desktop[1]


@pytest.fixture
def scope(desktop):
    with WindowScope("class:tk") as scope:
        yield scope


def xdotool(*args: str) -> str:
    return subprocess.run(["xdotool", *args], check=True, capture_output=True, text=True, timeout=10).stdout


def start_other(geometry: str) -> tuple[TargetApp, WindowInfo]:
    """A second TargetApp and its window (the one that was not there before)."""
    before = set(ids(list_windows()))
    other = TargetApp(geometry=geometry)
    (window,) = [w for w in list_windows() if w.id not in before]
    return other, window


def until(predicate, timeout=5.0):
    """Poll until predicate() is truthy (the window manager acts asynchronously); return it."""
    end = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > end:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)
    return value


def rect_of(app: TargetApp, widget: str) -> tuple[int, int, int, int]:
    r = app.rect(widget)
    return r["x"], r["y"], r["width"], r["height"]


@live
def test_finds_the_window_by_class_and_by_title(app, scope):
    assert scope.window.wm_class == ("tk", "Tk")
    assert scope.window.title == "deskpilot target"
    assert scope.rect_screen() == rect_of(app, "window")  # the client area: no frame or title bar
    assert scope.notice is None
    with WindowScope("title:DESKPILOT TARG") as by_title:
        assert by_title.window.id == scope.window.id
    described = scope.describe()
    assert described == {
        "pattern": "class:tk",
        "id": scope.window.id,
        "wm_class": ["tk", "Tk"],
        "title": "deskpilot target",
        "rect": list(rect_of(app, "window")),
    }


@live
def test_no_match_lists_the_open_windows_printably(desktop):
    other, window = start_other("200x150+1000+600")
    with other:
        xdotool("set_window", "--name", "evil\x1b[2J title", str(window.id))
        until(lambda: any("evil" in w.title for w in list_windows()))
        with pytest.raises(UsageError) as caught:
            WindowScope("class:libreoffice")
    message = str(caught.value)
    assert "no window matches --window 'class:libreoffice'" in message
    assert "title 'deskpilot target'" in message and "class 'tk.Tk'" in message
    assert "evil\\x1b[2J title" in message and "\x1b" not in message  # an untrusted title made visible
    assert f"id {window.id:#x}" in message and "--window id:0x" in message


@live
def test_capture_shows_only_the_window_and_grounds_into_it(app, scope):
    screen = scope.screen()
    try:
        shot = screen.capture()
        probe = screen.thumbnail()
    finally:
        screen.close()
    left, top, width, height = rect_of(app, "window")
    assert shot.image.size == (width, height)
    assert (shot.monitor.left, shot.monitor.top, shot.monitor.width, shot.monitor.height) == (left, top, width, height)
    assert shot.monitor.scale == 1.0
    assert probe.mode == "L" and probe.size == (width, height)  # under 480 wide: not reduced
    # the very pixels of the screen there
    full = MssScreen(1)
    try:
        assert shot.image.tobytes() == full.capture().image.crop((left, top, left + width, top + height)).tobytes()
    finally:
        full.close()
    for widget, colour in (("ok", MAGENTA), ("entry", CYAN)):
        x_screen, y_screen = app.center(widget)
        point_image = (x_screen - left, y_screen - top)
        assert shot.image.getpixel(point_image) == colour
        # what a correct model answers for that pixel, grounded back through the capture's geometry
        _, (gx_screen, gy_screen) = ground(image_to_model(point_image, shot.image.size), shot.monitor)
        assert abs(gx_screen - x_screen) <= 1 and abs(gy_screen - y_screen) <= 1
        assert scope.refuse("left_click", [(gx_screen, gy_screen)]) is None


@live
def test_points_outside_the_window_are_refused(app, scope):
    left, top, width, height = rect_of(app, "window")
    inside = app.center("ok")
    assert scope.refuse("left_click", [inside]) is None
    assert scope.refuse("left_drag", [inside, app.center("canvas")]) is None
    for outside in [(left - 1, top + 10), (left + width, top + 10), (left + 10, top - 1), (left + 10, top + height)]:
        reason = scope.refuse("left_click", [outside])
        assert reason == (
            f"refused: ({outside[0]}, {outside[1]}) is outside the window 'deskpilot target' "
            f"({left}, {top}, {width} x {height})"
        )
    assert "outside" in scope.refuse("left_drag", [inside, (5, 5)])
    assert "outside" in scope.refuse("scroll", [(left + width + 50, top)])
    assert "no point" in scope.refuse("hover", [])
    for kind in ("WAIT", "DONE", "FAIL"):
        assert scope.refuse(kind, []) is None


@live
def test_keys_wait_for_the_focus_and_covered_points_are_refused(app, scope):
    left, top, width, height = rect_of(app, "window")
    until(lambda: scope.refuse("type", []) is None)  # the target app has the focus
    other, window = start_other("300x200+700+500")  # over the target's lower right corner; takes the focus
    with other:
        xdotool("set_window", "--name", "other window", str(window.id))
        until(lambda: "other" in (scope.refuse("type", []) or ""))  # the title change reached us
        assert scope.refuse("type", []) == (
            "refused: type would go to the window 'other window', not to the window 'deskpilot target': "
            "click inside the window first to give it the focus"
        )
        assert "would go to the window 'other window'" in scope.refuse("key", [])
        covered = (750, 550)
        assert left <= covered[0] < left + width and top <= covered[1] < top + height
        assert scope.refuse("left_click", [covered]) == (
            "refused: (750, 550) is covered by the window 'other window', which lies over 'deskpilot target'"
        )
        assert scope.refuse("left_click", [app.center("ok")]) is None  # not under the other window
        # two windows match: the active one is taken, and the notice says so
        with WindowScope("class:tk") as both:
            assert both.window.id == window.id
            assert "2 windows match --window 'class:tk'; using the active one" in both.notice
        xdotool("windowactivate", "--sync", str(scope.window.id))
        until(lambda: scope.refuse("type", []) is None)
        assert scope.refuse("key", []) is None
        assert scope.refuse("left_click", [covered]) is None  # raised above the other window
        xdotool("windowactivate", "--sync", str(window.id))
        until(lambda: scope.refuse("type", []))
    until(lambda: scope.refuse("type", []) is None)  # the other one closed: the focus came back


@live
def test_a_moved_window_is_followed_and_a_closed_one_is_an_error(desktop):
    other, window = start_other("360x260+60+60")
    with other:
        ok_left, ok_top, _, _ = rect_of(other, "ok")
        ok_in_window = (ok_left - window.left + 5, ok_top - window.top + 5)
        with WindowScope(f"id:{window.id:#x}") as scope:
            screen = scope.screen()
            try:
                first = screen.capture()
                assert (first.monitor.left, first.monitor.top) == (window.left, window.top)
                xdotool("windowmove", "--sync", str(window.id), "500", "300")
                moved = until(lambda: scope.rect_screen()[:2] != (window.left, window.top) and scope.rect_screen())
                shot = screen.capture()
                assert (shot.monitor.left, shot.monitor.top) == moved[:2] != (window.left, window.top)
                assert shot.image.size == (window.width, window.height)
                assert shot.image.getpixel(ok_in_window) == MAGENTA
                assert "outside" in scope.refuse("left_click", [(window.left + 5, window.top + 5)])

                xdotool("windowminimize", "--sync", str(window.id))
                with pytest.raises(DisplayError, match="is not visible"):
                    screen.capture()
                xdotool("windowactivate", "--sync", str(window.id))
                until(lambda: screen.capture())

                other.close()
                with pytest.raises(DisplayError, match=r"the window 'deskpilot target' \(id 0x[0-9a-f]+\) was closed"):
                    until(lambda: screen.capture() and False)
                with pytest.raises(DisplayError, match="was closed"):
                    scope.refuse("type", [])
            finally:
                screen.close()


@live
def test_a_monitor_that_does_not_exist_is_an_error(app, scope):
    with pytest.raises(DisplayError, match="monitor 2 does not exist"):
        scope.screen(2)


@live
def test_the_windows_own_dialog_takes_keys_and_clicks(app, scope):
    from Xlib import X
    from Xlib.display import Display

    display = Display()
    try:
        screen = display.screen()
        dialog = screen.root.create_window(
            300,
            250,
            200,
            120,
            0,
            screen.root_depth,
            X.InputOutput,
            X.CopyFromParent,
            background_pixel=screen.white_pixel,
        )
        dialog.set_wm_name("a dialog")
        dialog.set_wm_class("dialog", "Dialog")
        dialog.set_wm_transient_for(display.create_resource_object("window", scope.window.id))
        dialog.map()
        display.sync()
        until(lambda: xdotool("getactivewindow").strip() == str(dialog.id))  # openbox focuses a new dialog
        (info,) = [w for w in list_windows() if w.id == dialog.id]
        center = (info.left + info.width // 2, info.top + info.height // 2)
        assert scope.refuse("left_click", [center]) is None  # over the target, but its own dialog
        assert scope.refuse("type", []) is None
        dialog.destroy()
        display.sync()
    finally:
        display.close()
    until(lambda: scope.refuse("type", []) is None)


@live
def test_client_side_shadows_are_left_out(desktop):
    """A GTK window with client-side decorations draws its shadow inside the client window."""
    from Xlib import X, Xatom
    from Xlib.display import Display

    display = Display()
    try:
        screen = display.screen()
        window = screen.root.create_window(
            40, 40, 240, 160, 0, screen.root_depth, X.InputOutput, X.CopyFromParent, background_pixel=screen.black_pixel
        )
        window.set_wm_name("shadowed")
        window.set_wm_class("shadowed", "Shadowed")
        left, right, top, bottom = 10, 12, 5, 15
        window.change_property(display.get_atom("_GTK_FRAME_EXTENTS"), Xatom.CARDINAL, 32, [left, right, top, bottom])
        window.map()
        display.sync()
        until(lambda: match_windows("class:shadowed", list_windows()))
        info = subprocess.run(["xwininfo", "-id", str(window.id)], capture_output=True, text=True, check=True).stdout
        raw = {k.strip(): int(v) for k, v in (line.split(":") for line in info.splitlines() if "upper-left" in line)}
        with WindowScope("class:shadowed") as scope:
            assert scope.rect_screen() == (
                raw["Absolute upper-left X"] + left,
                raw["Absolute upper-left Y"] + top,
                240 - left - right,
                160 - top - bottom,
            )
        window.destroy()
        display.sync()
    finally:
        display.close()


@live
def test_without_a_window_manager_the_root_children_and_the_input_focus_serve(desktop):
    with xvfb_display(800, 600, window_manager=False):
        with TargetApp(geometry="400x300+50+60") as app, WindowScope("tk") as scope:
            assert scope.rect_screen() == rect_of(app, "window")
            assert scope.refuse("type", []) is None  # Tk took the input focus
            with TargetApp(geometry="200x100+300+300"):  # over the first; takes the focus
                assert "would go to" in until(lambda: scope.refuse("type", []))
                assert "is covered by" in scope.refuse("left_click", [(350, 340)])
