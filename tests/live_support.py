"""Helpers for live tests (not tests themselves): a private X server and the Tk target app.

* ``have_xvfb()``: whether Xvfb is installed (live tests skip without it).
* ``xvfb_display(width, height)`` (from ``agent.xvfb``, shared with ``bench --live``): a context manager running Xvfb (``-nolisten tcp``, on a
  free display number chosen by Xvfb itself through ``-displayfd``) plus openbox, with
  ``os.environ["DISPLAY"]`` pointing at it inside the block; yields the display name.
* ``set_monitors(rects)``: split the current X screen into RandR monitors (two-monitor tests).
* ``TargetApp(events_file=None, geometry=None, title=None, small_target=None)``: starts ``tests/apps/target_app.py`` on
  the current DISPLAY and waits for its "ready" event (kept as ``.ready``); ``events()``
  reads back what it logged (format: that file's docstring), ``wait_for(predicate,
  timeout, since=0)`` polls until ``predicate(events)`` holds, ``mark()`` counts events
  so far (for ``since``), ``rect(name)``/``center(name)`` give widgets' screen places.

pyautogui and several displays in one process: importing pyautogui binds it to the display
DISPLAY names at that moment. Instead of running live parts in subprocesses, the executor
re-points it: ``PyAutoGuiExecutor`` records the display it was built on and, before every
action, calls ``actions.pyautogui_executor.bind_pyautogui(display)``, which reloads
pyautogui's X11 backend (``pyautogui._pyautogui_x11``: its ``_display`` connection and
keycode table) when it is bound elsewhere, and recomputes the fail-safe corners for that
screen's size. So build the executor (and any ``mss`` grabber, which also reads DISPLAY
when created) inside the ``xvfb_display`` block, e.g. one at 1280x800 and then one at
2560x1440; an executor must not be used after its display is gone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.xvfb import have_xvfb, xvfb_display  # noqa: F401  (the live tests import them from here)

TARGET_APP = Path(__file__).parent / "apps" / "target_app.py"


class TargetApp:
    """``tests/apps/target_app.py`` running on the current DISPLAY; a context manager.

    ``events_file`` defaults to a private temporary file. ``ready`` is the app's "ready"
    event (window and widget rectangles in screen pixels).
    """

    def __init__(
        self,
        events_file: str | Path | None = None,
        geometry: str | None = None,
        timeout: float = 15.0,
        title: str | None = None,
        small_target: int | None = None,
    ) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="deskpilot-target-")
        self.events_file = Path(events_file or Path(self._dir.name) / "events.jsonl")
        self.events_file.write_text("")
        command = [sys.executable, str(TARGET_APP), str(self.events_file)]
        if geometry:
            command += ["--geometry", geometry]
        if title:
            command += ["--title", title]
        if small_target:
            command += ["--small-target", str(small_target)]
        self._stderr = open(Path(self._dir.name) / "stderr.txt", "w+")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self._stderr)
        try:
            events = self.wait_for(lambda evs: any(e["event"] == "ready" for e in evs), timeout)
        except BaseException:
            self.close()
            raise
        self.ready: dict[str, Any] = next(e for e in events if e["event"] == "ready")

    def __enter__(self) -> TargetApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def events(self) -> list[dict[str, Any]]:
        """Every event logged so far, oldest first (the first one is "ready")."""
        with open(self.events_file, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.endswith("\n")]

    def mark(self) -> int:
        """The number of events so far: pass it as ``since`` to look only at newer ones."""
        return len(self.events())

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], Any], timeout: float = 5.0, since: int = 0
    ) -> list[dict[str, Any]]:
        """Poll until ``predicate(events[since:])`` is true and return those events.

        Raises TimeoutError (showing the last events) or RuntimeError if the app died.
        """
        end = time.monotonic() + timeout
        while True:
            events = self.events()[since:]
            if predicate(events):
                return events
            if self.process.poll() is not None:
                self._stderr.seek(0)
                raise RuntimeError(f"target app exited ({self.process.returncode}): {self._stderr.read()}")
            if time.monotonic() > end:
                raise TimeoutError(f"no matching events within {timeout}s; last events: {events[-12:]}")
            time.sleep(0.02)

    def rect(self, widget: str) -> dict[str, int]:
        """The screen rectangle {x, y, width, height} of 'ok', 'entry', 'canvas', 'small' or 'window'."""
        return self.ready["window"] if widget == "window" else self.ready["widgets"][widget]

    def center(self, widget: str) -> tuple[int, int]:
        """The screen pixel at the centre of a widget."""
        r = self.rect(widget)
        return r["x"] + r["width"] // 2, r["y"] + r["height"] // 2

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()
        self._dir.cleanup()


def set_monitors(rects: list[tuple[int, int, int, int]]) -> None:
    """Split the current X screen into RandR 1.5 monitors, one per (left, top, width, height),
    the first primary and holding the screen's output: mss then lists exactly these (Xvfb
    has one output, so this is how a test gets a two-monitor desktop). They last while some
    client stays connected (Xvfb resets when the last one leaves: keep the window manager
    running). python-xlib's own
    ``xrandr_set_monitor`` cannot pack its request, hence the flat one here."""
    from Xlib.display import Display
    from Xlib.ext import randr
    from Xlib.protocol import rq

    class SetMonitor(rq.Request):
        _request = rq.Struct(
            rq.Card8("opcode"), rq.Opcode(43), rq.RequestLength(), rq.Window("window"),
            rq.Card32("name"), rq.Bool("primary"), rq.Bool("automatic"), rq.LengthOf("outputs", 2),
            rq.Int16("x"), rq.Int16("y"), rq.Card16("width_in_pixels"), rq.Card16("height_in_pixels"),
            rq.Card32("width_in_millimeters"), rq.Card32("height_in_millimeters"), rq.List("outputs", rq.Card32Obj),
        )  # fmt: skip

    display = Display()
    try:
        root = display.screen().root
        outputs = list(root.xrandr_get_screen_resources().outputs)
        for number, (left, top, width, height) in enumerate(rects):
            SetMonitor(
                display=display.display, opcode=display.display.get_extension_major(randr.extname), window=root,
                name=display.intern_atom(f"DESKPILOT-{number + 1}"), primary=number == 0, automatic=False,
                x=left, y=top, width_in_pixels=width, height_in_pixels=height,
                width_in_millimeters=width * 254 // 960, height_in_millimeters=height * 254 // 960,  # 96 dpi
                outputs=outputs if number == 0 else [],
            )  # fmt: skip
        display.sync()
    finally:
        display.close()
