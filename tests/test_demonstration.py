"""deskpilot record without a display: input events -> gestures -> steps -> a recording that replays.

The coalescer's rules (clicks, double clicks, drags, scrolls, typing, combinations, the kill
hotkey, Ctrl-C), the X11 keymap tracking, the rolling capture's choice of frame, and the
recorder writing a recording that ``replay`` checks and simulates, on unusual monitors too.
"""

from __future__ import annotations

import struct
import sys
import threading

import pytest
from PIL import Image, ImageDraw

from agent.capture import Screenshot
from agent.config import Settings
from agent.demonstration import (
    Coalescer,
    Demonstrator,
    ModelDescriber,
    RollingCapture,
    StopRequest,
    crop_to_window,
)
from agent.geometry import MonitorGeometry, image_to_screen, screen_to_image
from agent.listen import InputEvent, X11Keymap, keysym_char, pynput_key, vocabulary_name
from agent.planner import ScriptedPlanner
from agent.replay.live import settle_gap
from agent.replay.offline import check, simulate
from agent.report import render
from agent.trajectory import JsonlRecorder, load

# --- event helpers -------------------------------------------------------------------------


def down(t, key="", char="", base=None):
    return InputEvent("key_down", t, key=key, char=char, base=char.lower() if base is None else base)


def up(t, key="", char=""):
    return InputEvent("key_up", t, key=key, char=char)


def tap(t, key="", char="", base=None):
    return [down(t, key, char, base), up(t + 0.01, key, char)]


def typing(t, text, gap=0.08):
    events = []
    for i, char in enumerate(text):
        shifted = char.isupper()
        at = t + i * gap
        if shifted:
            events.append(down(at - 0.01, "shift"))
        events += tap(at, char=char, base=char.lower())
        if shifted:
            events.append(up(at + 0.02, "shift"))
    return events


def click(t, x, y, button="left"):
    return [InputEvent("button_down", t, x, y, button=button), InputEvent("button_up", t + 0.05, x, y, button=button)]


def wheel(t, x, y, clicks):
    return [InputEvent("wheel", t + i * 0.05, x, y, wheel=1 if clicks > 0 else -1) for i in range(abs(clicks))]


def run(events, coalescer=None, end=100.0, interrupted_at=None):
    """Feed events in order (idle checks between them, as the recorder does) and finish."""
    c = coalescer or Coalescer()
    out = []
    for event in events:
        out += c.idle(event.t)
        out += c.feed(event)
    out += c.idle(end)
    out += c.finish(interrupted_at)
    return out


def kinds(gestures):
    return [(g.kind, g.keys or g.text or g.direction) for g in gestures]


# --- the coalescer ----------------------------------------------------------------------------


def test_a_click_a_double_click_and_two_separate_clicks():
    gestures = run([*click(1.0, 100, 100), *click(1.2, 101, 101), *click(3.0, 100, 100), *click(3.8, 100, 100)])
    assert [g.kind for g in gestures] == ["left_double_click", "left_click", "left_click"]
    assert gestures[0].points_screen == [(100, 100)] and gestures[0].t_start == 1.0


def test_a_second_click_elsewhere_is_not_a_double_click():
    gestures = run([*click(1.0, 100, 100), *click(1.2, 140, 100)])
    assert [(g.kind, g.points_screen) for g in gestures] == [("left_click", [(100, 100)]), ("left_click", [(140, 100)])]


def test_right_and_middle_clicks():
    gestures = run([*click(1.0, 10, 20, "right"), *click(1.1, 10, 20, "middle")])
    assert [g.kind for g in gestures] == ["right_click", "middle_click"]


def test_a_drag_is_press_motion_and_release_beyond_a_few_pixels():
    events = [
        InputEvent("button_down", 1.0, 100, 100, button="left"),
        InputEvent("motion", 1.1, 130, 110),
        InputEvent("motion", 1.2, 200, 150),
        InputEvent("button_up", 1.5, 200, 150, button="left"),
        InputEvent("button_down", 3.0, 100, 100, button="left"),
        InputEvent("motion", 3.1, 103, 101),  # a shaky click, not a drag
        InputEvent("button_up", 3.2, 102, 100, button="left"),
    ]
    gestures = run(events)
    assert [(g.kind, g.points_screen) for g in gestures] == [
        ("left_drag", [(100, 100), (200, 150)]),
        ("left_click", [(100, 100)]),
    ]
    assert gestures[0].t_end - gestures[0].t_start == pytest.approx(0.5)


def test_scroll_clicks_at_one_place_make_one_scroll():
    events = [
        *wheel(1.0, 300, 300, -3),
        *wheel(1.2, 302, 301, -2),  # same direction, same place, within the gap
        *wheel(1.5, 300, 300, 2),  # the other way
        *wheel(5.0, 300, 300, 1),  # after a pause
        *wheel(5.1, 600, 300, 1),  # elsewhere
    ]
    gestures = run(events)
    assert [(g.kind, g.direction, g.steps) for g in gestures] == [
        ("scroll", "down", 5),
        ("scroll", "up", 2),
        ("scroll", "up", 1),
        ("scroll", "up", 1),
    ]


def test_typed_text_is_one_type_action_until_a_pointer_action_or_a_pause():
    events = [*typing(1.0, "Hello wörld"), *click(3.0, 5, 5), *typing(4.0, "ab"), *typing(7.0, "cd")]
    gestures = run(events)
    assert kinds(gestures) == [("type", "Hello wörld"), ("left_click", ""), ("type", "ab"), ("type", "cd")]
    assert gestures[0].t_start == 1.0


def test_backspace_takes_back_a_typo_and_alone_is_a_key():
    events = [*typing(1.0, "helo"), *tap(1.5, "backspace"), *typing(1.6, "lo"), *click(3, 1, 1), *tap(4, "backspace")]
    assert kinds(run(events)) == [("type", "hello"), ("left_click", ""), ("key", "backspace")]


def test_combinations_and_keys_that_type_nothing():
    events = [
        *typing(1.0, "ab"),
        down(1.5, "ctrl"),
        down(1.55, "shift"),
        *tap(1.6, char="T", base="t"),
        up(1.7, "shift"),
        up(1.7, "ctrl"),
        *tap(2.0, "enter"),
        down(2.2, "shift"),
        *tap(2.3, "tab"),
        up(2.4, "shift"),
        down(2.5, "alt"),
        *tap(2.6, "f4"),
        up(2.7, "alt"),
        down(3.0, "ctrl"),
        *tap(3.1, char=" ", base=" "),
        up(3.2, "ctrl"),
    ]
    assert kinds(run(events)) == [
        ("type", "ab"),
        ("key", "ctrl+shift+t"),
        ("key", "enter"),
        ("key", "shift+tab"),
        ("key", "alt+f4"),
        ("key", "ctrl+space"),
    ]


def test_alt_or_the_logo_key_alone_is_a_key_shift_or_ctrl_alone_are_not():
    events = [*tap(1.0, "win"), *tap(1.5, "shift"), *tap(2.0, "ctrl"), *tap(2.5, "alt")]
    assert kinds(run(events)) == [("key", "win"), ("key", "alt")]


def test_the_kill_hotkey_stops_and_is_not_recorded():
    c = Coalescer("esc*3")
    gestures = run([*typing(1.0, "ok"), *tap(2.0, "esc"), *tap(2.2, "esc"), *tap(2.4, "esc"), *click(3, 1, 1)], c)
    assert c.stopped and kinds(gestures) == [("type", "ok")]


def test_escape_presses_that_are_not_the_hotkey_are_keys_in_their_place():
    gestures = run([*tap(1.0, "esc"), *tap(1.2, "esc"), *typing(1.4, "x"), *tap(3.0, "esc"), *tap(5.0, "esc")])
    assert kinds(gestures) == [("key", "esc"), ("key", "esc"), ("type", "x"), ("key", "esc"), ("key", "esc")]


def test_a_combination_kill_hotkey_is_dropped_at_once():
    c = Coalescer("ctrl+alt+q")
    events = [*click(1, 5, 5), down(2, "ctrl"), down(2.05, "alt"), *tap(2.1, char="q"), *click(2.3, 9, 9)]
    assert [g.kind for g in run(events, c)] == ["left_click"] and c.stopped


def test_the_ctrl_c_that_stopped_the_recording_is_not_an_action():
    events = [*typing(1.0, "a"), down(2.0, "ctrl"), *tap(2.1, char="c"), up(2.2, "ctrl")]
    assert kinds(run(events, end=2.5, interrupted_at=2.3)) == [("type", "a")]
    assert kinds(run(events, end=2.5)) == [("type", "a"), ("key", "ctrl+c")]  # a copy, not the stop


def test_a_bad_kill_hotkey_is_a_usage_error():
    from agent.errors import UsageError

    with pytest.raises(UsageError):
        Coalescer("ctrl+nosuchkey")


# --- naming keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, want",
    [
        ("Control_L", "ctrl"),
        ("Shift_R", "shift"),
        ("Super_L", "win"),
        ("Return", "enter"),
        ("Escape", "esc"),
        ("Page_Down", "pagedown"),
        ("KP_Home", "home"),
        ("F11", "f11"),
        ("ctrl_r", "ctrl"),
        ("cmd", "win"),
        ("XF86AudioPlay", ""),
    ],
)
def test_vocabulary_names(name, want):
    assert vocabulary_name(name) == want


def _request(first, per_keycode, rows, order="<"):
    symbols = [s for row in rows for s in row]
    body = struct.pack(order + "BB2x", first, per_keycode) + struct.pack(order + f"{len(symbols)}I", *symbols)
    length = (4 + len(body)) // 4
    return struct.pack(order + "BBH", 100, len(rows), length) + body


def test_the_keymap_follows_keycodes_rebound_for_one_press():
    keymap = X11Keymap({38: [0x61, 0x41], 50: [0xFFE1, 0], 9: [0xFF1B, 0], 66: [0xFFE5, 0]})
    assert keymap.resolve(38, 0) == ("", "a", "a")
    assert keymap.resolve(38, 0x01) == ("", "A", "a")  # Shift
    assert keymap.resolve(38, 0x02) == ("", "A", "a")  # Caps Lock
    assert keymap.resolve(50, 0) == ("shift", "", "") and keymap.resolve(9, 0) == ("esc", "", "")
    assert keymap.resolve(66, 0) == ("", "", "")  # Caps Lock itself is not an action
    little = sys.byteorder == "little"
    used = keymap.change(_request(8, 1, [[0x01004E16]]), swapped=not little)  # xdotool binds 世 to keycode 8
    assert used == 12 and keymap.resolve(8, 0) == ("", "世", "世")
    keymap.change(_request(8, 2, [[0xE9, 0]], order=">"), swapped=little)  # a client of the other byte order
    assert keymap.resolve(8, 0x01) == ("", "É", "é")


@pytest.mark.parametrize(
    "keysym, char", [(0x41, "A"), (0xE9, "é"), (0x01004E16, "世"), (0x07E1, "α"), (0xFFB5, "5"), (0xFF0D, "")]
)
def test_keysym_characters(keysym, char):
    from agent.listen import _keysym_chars

    assert keysym_char(keysym, _keysym_chars()) == char


class _Key:
    def __init__(self, name=None, char=None):
        self.name, self.char = name, char


@pytest.mark.parametrize(
    "key, want",
    [
        (_Key(name="ctrl_l"), ("ctrl", "", "")),
        (_Key(name="space"), ("", " ", " ")),
        (_Key(name="enter"), ("enter", "", "")),
        (_Key(char="T"), ("", "T", "t")),
        (_Key(char="\x03"), ("", "", "c")),  # ctrl+c as Windows reports it
        (_Key(name="alt_gr"), ("", "", "")),
        (_Key(), ("", "", "")),
    ],
)
def test_pynput_keys(key, want):
    assert pynput_key(key) == want


# --- the rolling capture --------------------------------------------------------------------


class _Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


class _Ticks:
    """A clock that moves on a millisecond each time it is read."""

    def __init__(self):
        self.t, self.lock = 100.0, threading.Lock()

    def __call__(self):
        with self.lock:
            self.t += 0.001
            return self.t


class _Screen:
    """A screen whose every capture is a new colour, so frames can be told apart."""

    def __init__(self, monitor=MonitorGeometry(0, 0, 32, 20)):
        self.monitor, self.count = monitor, 0

    def capture(self):
        self.count += 1
        return Screenshot(Image.new("RGB", (self.monitor.width, self.monitor.height), (self.count, 0, 0)), self.monitor)


def test_the_frame_before_an_event_is_the_newest_grab_completed_before_it():
    screen = _Screen()
    capture = RollingCapture(lambda: screen, interval=0.005, keep=3, clock=_Ticks()).start()
    while screen.count < 6:
        threading.Event().wait(0.005)
    capture.close()
    newest = capture.before(1e9)
    n, t = newest.shot.image.getpixel((0, 0))[0], newest.t  # frame n completed at t, n - 1 at t - 0.002...

    def colour(at):
        return capture.before(at).shot.image.getpixel((0, 0))[0]

    assert colour(t) == n and colour(t - 0.0005) == n - 1  # completed just after: not before the event
    assert colour(t - 0.0025) == n - 2 and colour(t - 0.0045) == n - 2  # older than all kept: the oldest


def test_a_screen_that_cannot_open_fails_at_start():
    from agent.errors import DisplayError

    def broken():
        raise DisplayError("no display here")

    with pytest.raises(DisplayError, match="no display here"):
        RollingCapture(broken).start()


# --- the recorder -----------------------------------------------------------------------------

MONITORS = {
    "1280x800": MonitorGeometry(0, 0, 1280, 800),
    "retina left of primary": MonitorGeometry(-1440, -200, 2880, 1800, 2.0),
    "150% at 1366": MonitorGeometry(1366, 0, 2880, 1620, 1.5),
}


@pytest.mark.parametrize("monitor", MONITORS.values(), ids=list(MONITORS))
def test_a_recorded_screen_point_converts_back_to_itself(monitor):
    """What the person pointed at (screen) -> image pixel -> screen: the same point, at any scale,
    so replay clicks where the person clicked (rounding gave 102 back for 103 at 150 %)."""
    width_screen = int(monitor.width / monitor.scale)
    for x_screen in range(monitor.left, monitor.left + width_screen):
        point_screen = (x_screen, monitor.top + 103)
        assert image_to_screen(screen_to_image(point_screen, monitor), monitor) == point_screen


def _desktop(monitor):
    image = Image.new("RGB", (monitor.width, monitor.height), "#d0d0d0")
    draw = ImageDraw.Draw(image)
    draw.rectangle((monitor.width * 0.1, monitor.height * 0.4, monitor.width * 0.6, monitor.height * 0.5), "#00ffff")
    draw.rectangle((monitor.width * 0.6, monitor.height * 0.1, monitor.width * 0.9, monitor.height * 0.3), "#ff00ff")
    return Screenshot(image, monitor)


class _FixedScreen:
    def __init__(self, shot):
        self.shot = shot

    def capture(self):
        return self.shot


def _screen_point(monitor, fx, fy):
    return image_to_screen((int(monitor.width * fx) + 1, int(monitor.height * fy) + 1), monitor)


def _demonstration(monitor, tmp_path, events, **kwargs):
    clock = _Clock(10.0)
    capture = RollingCapture(lambda: _FixedScreen(_desktop(monitor)), clock=clock).start()
    recorder = JsonlRecorder(tmp_path / "recs", "fill the form", {"monitor": 1}, mode="human")
    demonstrator = Demonstrator(capture, recorder, clock=clock, **kwargs)
    for event in events:
        demonstrator.feed(event)
    stop = StopRequest()
    stop.set("the test", at=100.0)
    clock.t = 100.0
    try:
        outcome = demonstrator.run(stop)
    finally:
        capture.close()
    return recorder.path, outcome, demonstrator


def _form_events(monitor):
    entry, ok = _screen_point(monitor, 0.3, 0.45), _screen_point(monitor, 0.7, 0.2)
    drag_from, drag_to = _screen_point(monitor, 0.2, 0.7), _screen_point(monitor, 0.5, 0.8)
    return [
        *click(11.0, *entry),
        *typing(11.5, "Grüße 世界"),
        down(13.0, "ctrl"),
        *tap(13.1, char="a"),
        up(13.2, "ctrl"),
        InputEvent("button_down", 14.0, *drag_from, button="left"),
        InputEvent("motion", 14.2, *drag_to),
        InputEvent("button_up", 14.4, *drag_to, button="left"),
        *wheel(15.0, *drag_to, -3),
        *click(16.0, *ok),
    ]


@pytest.mark.parametrize("name", MONITORS)
def test_a_demonstration_becomes_a_recording_that_replays(name, tmp_path):
    monitor = MONITORS[name]
    path, outcome, _ = _demonstration(monitor, tmp_path, _form_events(monitor))
    rec = load(path)
    assert rec.header.mode == "human" and rec.outcome.status == "done"
    assert outcome.message == "recorded 6 actions; stopped by the test"
    assert [s.action_text for s in rec.steps][1:3] == ["type(content='Grüße 世界')", "key(keys='ctrl+a')"]
    assert [s.action["kind"] for s in rec.steps] == [
        "left_click",
        "type",
        "key",
        "left_drag",
        "scroll",
        "left_click",
    ]
    assert rec.steps[4].action["step"] == 3 and rec.steps[4].action["direction"] == "down"
    entry = rec.steps[0].targets[0]
    assert entry.point_screen == _screen_point(monitor, 0.3, 0.45)
    assert image_to_screen(entry.point_image, monitor) == entry.point_screen
    assert abs(entry.box_model[0] - 300) <= 1 and abs(entry.box_model[1] - 450) <= 1  # thousandths of the capture
    assert all(s.by_person and not s.attempts for s in rec.steps)
    assert rec.steps[3].timings.execute_s == pytest.approx(0.4)
    assert rec.steps[1].started_at - rec.steps[0].started_at == pytest.approx(0.5, abs=0.01)
    assert settle_gap(rec.steps[0], rec.steps[1]) == pytest.approx(0.45, abs=0.01)  # pause after the click
    assert check(rec) == [] and simulate(rec) == []


def test_check_and_simulate_name_what_no_longer_holds_in_a_persons_step(tmp_path):
    monitor = MONITORS["1280x800"]
    path, _, _ = _demonstration(monitor, tmp_path, _form_events(monitor))
    steps = path / "steps.jsonl"
    text = steps.read_text()
    rec = load(path)
    target = rec.steps[0].targets[0]
    before, after = f'"point_image":[{target.point_image[0]},', f'"point_image":[{target.point_image[0] + 9},'
    steps.write_text(text.replace(before, after, 1))
    (found,) = check(load(path))
    assert found.step == 1 and found.what.startswith("target was")
    assert simulate(load(path)) == [found]
    steps.write_text(text.replace("ctrl+a", "ctrl+nosuchkey"))
    (found,) = check(load(path))
    assert found.step == 3 and "no longer a key combination" in found.what
    steps.write_text(text.replace('"direction":"down","step":3', '"direction":"down","step":99'))
    (found,) = check(load(path))
    assert found.step == 5 and "no longer validates" in found.what


def test_masked_typing_records_placeholders_never_the_text(tmp_path):
    monitor = MONITORS["1280x800"]
    events = [*typing(11.0, "hunter2!"), *click(12.5, 10, 10), *typing(13.0, "s3cret")]
    path, _, _ = _demonstration(monitor, tmp_path, events, mask_typing=True)
    rec = load(path)
    assert [s.action.get("content") for s in rec.steps] == ["{{secret:TYPED_1}}", None, "{{secret:TYPED_2}}"]
    written = b"".join(p.read_bytes() for p in path.rglob("*.json*"))
    assert b"hunter2" not in written and b"s3cret" not in written
    assert check(rec) == [] and simulate(rec) == []


class _Scope:
    def __init__(self, rect):
        self.rect = rect

    def rect_screen(self):
        return self.rect

    def refuse(self, kind, points):
        left, top, width, height = self.rect
        if kind in ("key", "type"):
            return None
        outside = [p for p in points if not (left <= p[0] < left + width and top <= p[1] < top + height)]
        return f"refused: {outside[0]} is outside the window" if outside else None


def test_a_window_scope_records_the_windows_area_and_leaves_out_the_rest(tmp_path):
    monitor = MONITORS["retina left of primary"]
    rect = (-1340, -100, 600, 400)  # screen units
    left_out = []
    events = [*click(11.0, -1300, -50), *click(12.0, 0, 0), *typing(13.0, "x")]
    path, _, demonstrator = _demonstration(monitor, tmp_path, events, scope=_Scope(rect), on_left_out=left_out.append)
    rec = load(path)
    assert [s.action["kind"] for s in rec.steps] == ["left_click", "type"] and demonstrator.left_out == 1
    assert "outside the window" in left_out[0]
    step = rec.steps[0]
    assert step.geometry == MonitorGeometry(-1340, -100, 1200, 800, 2.0)
    assert step.targets[0].point_image == (80, 100) and step.targets[0].point_screen == (-1300, -50)
    with Image.open(path / step.screenshot) as shot:
        assert shot.size == (1200, 800)
    assert check(rec) == [] and simulate(rec) == []


def test_crop_to_window_is_none_off_the_monitor():
    shot = _desktop(MonitorGeometry(0, 0, 320, 200))
    assert crop_to_window(shot, (400, 0, 50, 50)) is None
    part = crop_to_window(shot, (300, 150, 100, 100))
    assert part.monitor == MonitorGeometry(300, 150, 20, 50) and part.image.size == (20, 50)


def test_describe_asks_the_model_to_name_each_target(tmp_path):
    monitor = MONITORS["1280x800"]
    planner = ScriptedPlanner(
        [
            "hover(start_box='[300,450]')",  # names nothing: asked again
            "hover(start_box='[300,450]', element_info='Name field')",
            "hover(start_box='[700,200]', element_info='OK  button\\n')",
        ]
    )
    settings = Settings.resolve("vllm", price_in=1.0, price_out=1.0)
    describer = ModelDescriber(planner, settings)
    entry, ok = _screen_point(monitor, 0.3, 0.45), _screen_point(monitor, 0.7, 0.2)
    path, _, _ = _demonstration(
        monitor, tmp_path, [*click(11.0, *entry), *typing(11.5, "a"), *click(13.0, *ok)], describe=describer
    )
    rec = load(path)
    assert [s.action.get("element_info") for s in rec.steps] == ["Name field", None, "OK button"]
    x, y = rec.steps[0].targets[0].box_model
    assert f"point [{x},{y}]" in planner.calls[0].task and len(planner.calls) == 3
    assert check(rec) == [] and simulate(rec) == []


# --- replay, view -----------------------------------------------------------------------------


def test_settle_gap_is_the_pause_between_the_end_of_an_action_and_the_next():
    from agent.trajectory import Step, Timings

    geometry = MonitorGeometry(0, 0, 10, 10)
    a = Step(step=1, started_at=100.0, screenshot="", geometry=geometry, timings=Timings(execute_s=2.0))
    b = Step(step=2, started_at=103.5, screenshot="", geometry=geometry)
    assert settle_gap(a, b) == pytest.approx(1.5)


def test_the_report_shows_a_persons_steps(tmp_path):
    monitor = MONITORS["1280x800"]
    path, _, _ = _demonstration(monitor, tmp_path, _form_events(monitor))
    page = render(load(path))
    assert page.count("recorded from a person") == 7  # the header and each of the 6 steps
    assert "reply 1" not in page and "tokens" not in page and "history" not in page
    assert "began at +0.50 s" in page


@pytest.mark.parametrize(
    "args, message",
    [
        (["--kill-hotkey", "ctrl+nosuchkey"], "bad kill hotkey"),
        ([], "DISPLAY"),
    ],
)
def test_record_usage_errors_exit_2_and_leave_no_recording(tmp_path, args, message):
    import subprocess

    from tests.conftest import cli_env

    env = {k: v for k, v in cli_env().items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "record", "--recordings", str(tmp_path / "recs"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "recs").exists()
