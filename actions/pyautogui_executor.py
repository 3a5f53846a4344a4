"""``PyAutoGuiExecutor``: performs grounded actions on the real desktop with pyautogui.

pyautogui is imported lazily: on Linux its import opens the X display named by DISPLAY and
crashes without one, and the rest of the package must import anywhere. The import also
binds pyautogui to that display for the life of the process, so each executor remembers
the display it was made for and re-points pyautogui there when another executor moved it
(see ``bind_pyautogui``): executors for two Xvfb servers of different sizes can be used in
one process.

Text goes through ``actions.x11_typing`` on X11 (exact for any Unicode); elsewhere ASCII
goes through ``pyautogui.write`` and the rest through pynput. The pyautogui fail-safe stays
on: moving the mouse into a screen corner aborts the run (raised as ``Interrupted``).
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import time
from collections.abc import Callable

from actions.executor import PointScreen
from actions.keys import parse_combo
from actions.schema import (
    Action,
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
from agent.display import check_display
from agent.errors import DisplayError, Interrupted

_IS_X11 = sys.platform.startswith("linux")
_BUTTONS = {"left_click": "left", "right_click": "right", "middle_click": "middle"}


def x11_display_name() -> str:
    """The DISPLAY to drive, after checking an X server answers there (else DisplayError)."""
    check_display()  # no DISPLAY at all, or Wayland only: the same advice as for capture
    name = os.environ["DISPLAY"]
    from Xlib import error
    from Xlib.display import Display

    try:
        Display(name).close()
    except (error.DisplayError, error.ConnectionClosedError, OSError) as exc:
        raise DisplayError(
            f"cannot open X display {name!r} ({exc}): set DISPLAY to a running X server or use --dry-run --screens"
        ) from None
    return name


def bind_pyautogui(display_name: str | None = None):
    """Import pyautogui, pointed at the X display ``display_name``, and return the module.

    pyautogui's X11 backend opens ``Display(os.environ['DISPLAY'])`` and resolves its key
    table when first imported, and the fail-safe corners come from that screen's size.
    When asked for another display (a test's second Xvfb, of another size), the backend
    module is reloaded with DISPLAY set to it, so its connection and keycodes are the new
    server's, and the corners are recomputed. Elsewhere this just imports pyautogui.
    """
    if not _IS_X11:
        import pyautogui

        return pyautogui
    saved = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display_name or saved or ""
    try:
        import pyautogui

        backend = pyautogui.platformModule
        if backend._display.get_display_name() != os.environ["DISPLAY"]:
            try:
                backend._display.close()
            except Exception:  # that server may be gone already
                pass
            importlib.reload(backend)
            width, height = pyautogui.size()
            pyautogui.FAILSAFE_POINTS[:] = [(0, 0), (0, height - 1), (width - 1, 0), (width - 1, height - 1)]
    finally:
        if saved is None:
            del os.environ["DISPLAY"]
        else:
            os.environ["DISPLAY"] = saved
    return pyautogui


class PyAutoGuiExecutor:
    """Sends real mouse and keyboard input. See ``actions.executor.Executor``."""

    def __init__(
        self,
        *,
        pause: float = 0.02,
        wait_seconds: float = 5.0,
        drag_seconds: float = 0.3,
        type_interval: float = 0.01,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """``pause``: pyautogui.PAUSE between the calls that make up one action (a drag's
        press, move and release); the last call of an action does not pause, since every
        caller waits for the screen after an action anyway (the loop's settle, the recorded
        gap in replay): at 1440p that pause was a fifth of a click step's time outside the
        model. ``wait_seconds``: what WAIT sleeps
        (5 s as trained); ``drag_seconds``: how long a drag moves; ``type_interval``: pause
        after each typed character; ``should_stop``: polled between typed characters and
        during WAIT, raising Interrupted when it returns True (the kill switch)."""
        self.display = x11_display_name() if _IS_X11 else None
        self._gui = bind_pyautogui(self.display)
        self._gui.FAILSAFE = True
        self._gui.PAUSE = pause
        self.wait_seconds = wait_seconds
        self.drag_seconds = drag_seconds
        self.type_interval = type_interval
        self.should_stop = should_stop or (lambda: False)
        self._typer = None
        if _IS_X11:
            from actions.x11_typing import X11Typer

            self._typer = X11Typer(self.display, char_delay=type_interval, should_stop=lambda: self.should_stop())
            atexit.register(self.close)  # give back the keymap entries borrowed for typing

    def close(self) -> None:
        """Undo the keymap bindings made for typing. Safe to call twice."""
        if self._typer is not None:
            self._typer.close()
            self._typer = None

    def execute(self, action: Action, points_screen: list[PointScreen]) -> None:
        bind_pyautogui(self.display)  # a no-op unless another executor moved pyautogui
        try:
            self._execute(action, [self._off_corner(p) for p in points_screen])
        except self._gui.FailSafeException:
            raise Interrupted("pyautogui fail-safe: the mouse was moved into a screen corner") from None

    def _execute(self, action: Action, points: list[PointScreen]) -> None:
        gui = self._gui
        if isinstance(action, (LeftClick, RightClick, MiddleClick)):
            gui.click(*points[0], button=_BUTTONS[action.kind], _pause=False)
        elif isinstance(action, LeftDoubleClick):
            gui.click(*points[0], clicks=2, interval=0.05, button="left", _pause=False)
        elif isinstance(action, Hover):
            gui.moveTo(*points[0], _pause=False)
        elif isinstance(action, LeftDrag):
            (x0, y0), (x1, y1) = points
            gui.moveTo(x0, y0)
            gui.mouseDown(x0, y0, button="left")
            gui.moveTo(x1, y1, duration=self.drag_seconds)  # apps must see motion to drag
            gui.mouseUp(x1, y1, button="left", _pause=False)
        elif isinstance(action, Scroll):
            gui.moveTo(*points[0])
            gui.scroll(action.step if action.direction == "up" else -action.step, _pause=False)
        elif isinstance(action, Key):
            gui.hotkey(*parse_combo(action.keys), _pause=False)
        elif isinstance(action, Type):
            if points:  # a type action with a box: click there first, then type
                gui.click(*points[0], button="left")
                self._wait_buttons_released()
            self._type(action.content)
        elif isinstance(action, Wait):
            self._sleep(self.wait_seconds)
        # DONE and FAIL do nothing.
        if isinstance(action, (LeftClick, RightClick, MiddleClick, LeftDoubleClick, LeftDrag, Scroll)):
            self._wait_buttons_released()

    def _type(self, text: str) -> None:
        if self._typer is not None:
            self._typer.type(text)
            return
        from pynput.keyboard import Controller

        keyboard = None
        for char in text:
            if self.should_stop():
                raise Interrupted("typing stopped by the kill switch")
            if char.isascii():
                self._gui.write(char)
            else:
                keyboard = keyboard or Controller()
                keyboard.type(char)
            time.sleep(self.type_interval)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.should_stop():
                raise Interrupted("wait stopped by the kill switch")
            time.sleep(min(left, 0.1))

    def _off_corner(self, point: PointScreen) -> PointScreen:
        """Move a target in a screen corner one pixel inwards: the model pointing there
        must not trip the fail-safe on the next action."""
        x, y = int(point[0]), int(point[1])
        if (x, y) in self._gui.FAILSAFE_POINTS:
            x, y = x + (1 if x == 0 else -1), y + (1 if y == 0 else -1)
        return x, y

    def _wait_buttons_released(self, timeout: float = 3.0) -> None:
        """Return once the X server has delivered the button release.

        A window manager's passive button grab (click-to-focus) freezes pointer events
        until the WM replays them; a busy WM (openbox re-grabs its keys after every
        keymap change, ~40 ms each) can hold a click for seconds, and key events sent
        meanwhile overtake it: the click then moves the text cursor mid-typing.
        """
        if not _IS_X11:
            return
        root = self._gui.platformModule._display.screen().root
        end = time.monotonic() + timeout
        while root.query_pointer().mask & 0x1F00 and time.monotonic() < end:  # Button1-5Mask
            time.sleep(0.005)
