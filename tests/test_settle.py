"""Adaptive settle: unit tests on scripted frames and a fake clock, and live tests under Xvfb."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from agent.settle import AdaptiveSettle, SettleConfig, changed_fraction, thumbnail
from tests.live_support import have_xvfb, xvfb_display


class FakeClock:
    """Time moves only when the settle sleeps, or by ``probe_cost`` per probe."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@lru_cache(maxsize=1)
def _text_screen() -> Image.Image:
    image = Image.new("RGB", (1920, 1080), "white")
    draw = ImageDraw.Draw(image)
    for y in range(100, 900, 20):
        draw.text((80, y), "def run_episode(task, *, screen, planner, executor):", fill="black")
    return image


def screen(caret: bool = False, box_at: int | None = None) -> Image.Image:
    """A 1920x1080 white screen with text-like lines, optionally a caret or a moved box."""
    image = _text_screen().copy()
    draw = ImageDraw.Draw(image)
    if caret:
        # a 3x18 text cursor: the probe samples every 4th column at 1920 px, and this one is seen
        draw.rectangle((600, 400, 602, 417), fill="black")
    if box_at is not None:
        draw.rectangle((box_at, 950, box_at + 80, 1030), fill="blue")
    return image


def scripted(frames: list[Image.Image], clock: FakeClock, probe_cost: float = 0.003):
    thumbs = [thumbnail(f) for f in frames]
    calls = {"n": 0}

    def probe() -> Image.Image:
        clock.now += probe_cost
        frame = thumbs[min(calls["n"], len(thumbs) - 1)]
        calls["n"] += 1
        return frame

    return probe


def run(frames, config=None) -> tuple[float, AdaptiveSettle]:
    clock = FakeClock()
    settle = AdaptiveSettle(scripted(frames, clock), config or SettleConfig(), clock=clock, sleep=clock.sleep)
    return settle(), settle


class Times:
    """A probe wrapper that notes the fake clock's time of each grab."""

    def __init__(self, probe, clock: FakeClock) -> None:
        self.probe, self.clock, self.at = probe, clock, []

    def __call__(self):
        self.at.append(round(self.clock.now - 100.0, 4))
        return self.probe()


def timed(frames, config=None) -> tuple[float, list[float]]:
    clock = FakeClock()
    probe = Times(scripted(frames, clock), clock)
    settle = AdaptiveSettle(probe, config or SettleConfig(), clock=clock, sleep=clock.sleep)
    return settle(), probe.at


def test_static_screen_settles_after_the_quiet_window():
    spent, at = timed([screen()])
    cfg = SettleConfig()
    assert cfg.quiet_s <= spent < cfg.quiet_s + 0.01  # the probes' cost does not add up
    assert at == [0.0, 0.01, 0.04, 0.08]  # as the action ends, early, then on the poll grid


def test_a_change_seen_by_the_early_probe_starts_the_quiet_window_there():
    spent, at = timed([screen(), screen(box_at=300)])
    assert at == [0.0, 0.01, 0.05, 0.09]
    assert 0.09 <= spent < 0.1


def test_a_quiet_window_that_is_no_multiple_of_the_poll_ends_on_time():
    spent, at = timed([screen()], SettleConfig(quiet_s=0.1))
    assert at == [0.0, 0.01, 0.04, 0.08, 0.1]
    assert 0.1 <= spent < 0.11


def test_waits_until_an_animation_stops():
    frames = [screen(box_at=100 + 40 * i) for i in range(12)]  # changes on each of 12 probes
    spent, settle = run(frames)
    cfg = SettleConfig()
    assert settle.probes == 12 + 2  # the last change, then two equal probes
    # The early probe, 10 more a poll apart, then the quiet window after the last change.
    assert spent == pytest.approx(cfg.early_s + 10 * cfg.poll_s + cfg.quiet_s + 0.003)


def test_a_screen_that_never_stops_returns_at_max_wait():
    frames = [screen(box_at=40 * i) for i in range(20)]
    spent, _ = run(frames, SettleConfig(max_s=0.7))
    assert 0.7 <= spent < 0.75


def test_a_blinking_cursor_does_not_count_as_change():
    blinking = [screen(caret=True), screen()] * 10
    spent, _ = run(blinking)
    assert spent < SettleConfig().quiet_s + SettleConfig().poll_s
    strict, _ = run(blinking, SettleConfig(tolerance=0.0, max_s=0.5))
    assert strict >= 0.5  # the same frames do change: only the tolerance makes them quiet


def test_a_slow_creep_below_tolerance_each_step_still_counts():
    """Compared with the frame that opened the quiet window, not just the previous one."""
    creeping = [screen()]
    for i in range(30):
        creeping.append(creeping[-1].copy())
        ImageDraw.Draw(creeping[-1]).rectangle((100 + 24 * i, 960, 123 + 24 * i, 983), fill="red")
    one_step = changed_fraction(thumbnail(creeping[0]), thumbnail(creeping[1]))
    assert 0 < one_step < SettleConfig().tolerance < 2 * one_step
    spent, _ = run(creeping, SettleConfig(max_s=3.0))
    assert spent >= 30 * SettleConfig().poll_s


def test_changed_fraction():
    a, b = thumbnail(screen()), thumbnail(screen(box_at=500))
    assert changed_fraction(a, a) == 0.0
    assert 0.002 < changed_fraction(a, b) < 0.01
    assert changed_fraction(a, a.resize((10, 10))) == 1.0


def test_thumbnail_is_small_and_gray():
    thumb = thumbnail(Image.new("RGB", (2560, 1440)))
    assert thumb.mode == "L" and 400 <= thumb.width <= 520


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        SettleConfig(poll_s=0)
    with pytest.raises(ValueError):
        SettleConfig(max_s=-1)
    with pytest.raises(ValueError):
        SettleConfig(early_s=0.05)  # later than the poll


class FakeShot:
    def __init__(self, image: Image.Image) -> None:
        self.size = image.size
        self.raw = bytearray(image.convert("RGBA").tobytes("raw", "BGRA"))


def fake_mss_screen(frames: list[Image.Image]):
    """An MssScreen over a fake mss serving ``frames`` (the last one repeating); no display needed."""
    from agent.capture import MssScreen

    grabs = []
    shots = [FakeShot(f) for f in frames]

    class FakeMss:
        def grab(self, region):
            grabs.append(region)
            return shots[min(len(grabs), len(shots)) - 1]

    live = MssScreen.__new__(MssScreen)
    live._mss, live.region = FakeMss(), {"left": 0, "top": 0, "width": 1920, "height": 1080}
    return live, grabs


def test_for_screen_probes_thumbnails_and_keeps_the_quiet_frame(monkeypatch):
    from agent.image import Bgrx

    live, grabs = fake_mss_screen([screen()])
    monkeypatch.setattr(Bgrx, "to_rgb", lambda self: pytest.fail("a probe must not convert the whole frame"))
    settle = AdaptiveSettle.for_screen(live, SettleConfig(quiet_s=0.0))
    settle()
    assert settle.probes == 1 and grabs == [live.region]
    frame = settle.take_frame()
    assert frame is not None and frame.pixels.data is live._mss.grab(live.region).raw  # the probe's own grab
    assert settle.take_frame() is None  # handed over once
    assert live.thumbnail().mode == "L" and live.thumbnail().width <= 480


def test_the_kept_frame_is_the_last_probe_and_none_after_a_timeout():
    clock = FakeClock()
    frames = [screen(box_at=100), screen(box_at=300), screen(box_at=300), screen(box_at=300)]
    live, grabs = fake_mss_screen(frames)
    settle = AdaptiveSettle(live.probe, SettleConfig(), clock=clock, sleep=clock.sleep)
    settle()
    frame = settle.take_frame()
    assert settle.probes == 4 and frame is not None
    assert frame.image.tobytes() == frames[3].tobytes()  # the probe that proved the screen quiet
    moving, _ = fake_mss_screen([screen(box_at=40 * i) for i in range(40)])
    settle = AdaptiveSettle(moving.probe, SettleConfig(max_s=0.5), clock=clock, sleep=clock.sleep)
    settle()
    assert settle.take_frame() is None  # it never proved quiet


def test_a_frame_that_looks_final_is_prepared_ahead_and_used_when_the_pixels_match():
    clock = FakeClock()
    live, _ = fake_mss_screen([screen(box_at=100), screen(), screen()])
    settle = AdaptiveSettle(live.probe, SettleConfig(), ahead=(2700, "jpeg:90"), clock=clock, sleep=clock.sleep)
    settle()
    frame = settle.take_frame()
    assert settle.ahead_used and frame.is_prepared(2700, "jpeg:90")
    sent = frame.prepare(2700, "jpeg:90").result(5)
    assert sent.size == (1920, 1080)
    # A last probe with other pixels (a caret blinked on) is not given the earlier frame's work.
    live, _ = fake_mss_screen([screen(), screen(), screen(caret=True)])
    settle = AdaptiveSettle(live.probe, SettleConfig(), ahead=(2700, "jpeg:90"), clock=clock, sleep=clock.sleep)
    settle()
    frame = settle.take_frame()
    assert settle.ahead_used is False and not frame.is_prepared(2700, "jpeg:90")


def test_the_frame_after_a_change_is_prepared_at_once_and_a_superseded_one_is_dropped():
    from agent.image import SentImage

    clock = FakeClock()
    frames = [screen(), screen(box_at=100), screen(box_at=300), screen(box_at=300)]
    live, _ = fake_mss_screen(frames)
    started: list[tuple[float, int]] = []

    class Worker:  # runs nothing until asked: a preparation is "queued" when the next probe comes
        def __init__(self) -> None:
            self.jobs = []

        def submit(self, fn, *args):
            started.append((round(clock.now - 100.0, 4), len(self.jobs)))
            self.jobs.append((fn, args))

    settle = AdaptiveSettle(live.probe, SettleConfig(), ahead=(2700, "jpeg:90"), clock=clock, sleep=clock.sleep)
    settle._worker = Worker()  # type: ignore[assignment]
    settle()
    # Prepared as each change was seen (the probes at 10 and 50 ms), not only after a match.
    assert [at for at, _ in started] == [0.01, 0.05]
    first, second = settle._worker.jobs
    first[0](*first[1])  # the worker reaches the superseded frame's job: it was cancelled, nothing is made
    assert first[1][0].cancelled()
    second[0](*second[1])
    frame = settle.take_frame()
    assert settle.ahead_used and isinstance(frame.prepare(2700, "jpeg:90").result(5), SentImage)


def test_for_screen_falls_back_to_capture(tmp_path):
    from agent.capture import ImageScreen

    screen().save(tmp_path / "a.png")
    settle = AdaptiveSettle.for_screen(ImageScreen(tmp_path / "a.png"), SettleConfig(quiet_s=0.0))
    settle()
    assert settle.probes == 1


# --- live, under Xvfb ----------------------------------------------------------------------

ANIMATED_APP = Path(__file__).parent / "apps" / "animated_app.py"


@pytest.fixture
def live_app():
    if not have_xvfb():
        pytest.skip("Xvfb is not installed")
    try:
        import tkinter  # noqa: F401
    except ImportError:
        pytest.skip("tkinter is not installed")
    with xvfb_display(800, 600):
        app = subprocess.Popen(
            [sys.executable, str(ANIMATED_APP)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line.strip()) for line in app.stdout], daemon=True).start()

        def expect(word: str) -> None:
            assert lines.get(timeout=10) == word

        from agent.capture import MssScreen

        screen = MssScreen(1)
        try:
            expect("ready")
            time.sleep(0.2)  # first paint and the window manager's decorations
            yield screen, app, expect
        finally:
            screen.close()
            app.kill()
            app.wait(timeout=5)


@pytest.mark.live
def test_live_static_window_with_a_blinking_cursor_settles_quickly(live_app):
    screen, _, _ = live_app
    settle = AdaptiveSettle.for_screen(screen, SettleConfig(max_s=2.0))
    spent = settle()
    assert spent < 2.0 and spent < 0.6
    # The cursor really blinks (every 60 ms), and each blink stays under the tolerance.
    frames = []
    for _ in range(15):
        frames.append(screen.thumbnail())
        time.sleep(0.03)
    changes = [changed_fraction(frames[0], frame) for frame in frames[1:]]
    assert 0 < max(changes) <= SettleConfig().tolerance


@pytest.mark.live
def test_live_settle_waits_for_an_animation_to_stop(live_app):
    screen, app, expect = live_app
    # A wider quiet window than the default: a loaded machine can stall a 16 ms animation frame.
    settle = AdaptiveSettle.for_screen(screen, SettleConfig(max_s=2.0, quiet_s=0.15))
    app.stdin.write("animate 0.6\n")
    app.stdin.flush()
    expect("started")
    spent = settle()
    assert 0.5 <= spent < 2.0
