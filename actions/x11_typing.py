"""Exact Unicode typing on X11 through XTEST, by binding characters to spare keycodes.

``pyautogui.write`` only knows ASCII, and pynput's X11 backend stacks borrowed characters
on the levels of *one* keycode (``[世, 界]``); the server gives that keycode a key type on
which Shift does not reach the second level, so "世界" arrives as "世世". Here:

1. Characters already on the keyboard at level 0 or 1 (ASCII on a US map, space, Return)
   are pressed with their own keycode, plus Shift for level 1.
2. Any other character is bound, alone and at every level, to one of the *spare*
   keycodes (those with no keysym at all) with ``XChangeKeyboardMapping``: keysym
   ``0x01000000 | codepoint``, or the codepoint itself for Latin-1, as xdotool does.
3. Clients read the keymap lazily, when they handle the MappingNotify or the next key
   event, and Xlib can lose a change that lands while it is refreshing. So the keymap is
   only changed while the client is idle: all bindings a stretch of text needs are made
   at once, ``reuse_delay`` after the last key press or keymap change; then the typer
   waits ``settle`` for clients to take the change in, and types the whole stretch.
   Texts with more distinct unusual characters than spare keycodes (about 15-20 on a
   default keymap) are typed in several such stretches, rebinding the least recently
   used keycodes.
4. Bindings stay after ``type`` returns (a character typed again needs no change, and
   nothing is unbound under a slow client's feet); ``close`` removes them all. A keycode
   with one keysym at every level (a binding left by a process that died) is taken back
   as a spare.

Every keymap change also costs other clients work (openbox re-grabs its key bindings on
each MappingNotify, ~40 ms of CPU on Xvfb), hence one change per new character only.

Measured on Xvfb + openbox with the Tk Entry of tests/apps/target_app.py: pynput typed
"世界" as "世世" every time; rebinding a keycode right before each press, or restoring the
keymap right after the last key, turned characters into earlier or later ones or dropped
them (9 of 9 long texts wrong with no delays); this scheme typed "Crème brûlée, Grüße 世界
✓", a 97-character text with 66 distinct non-keyboard characters (CJK, Latin-1, quotes,
Greek, an emoji) and shifted ASCII exactly in 120 of 120 runs.

Each key press is synced on its own, so ``should_stop`` is polled between characters and
can abort a long text (raising ``agent.errors.Interrupted``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from agent.errors import DisplayError, Interrupted

_SPECIAL = {"\n": 0xFF0D, "\r": 0xFF0D, "\t": 0xFF09, "\b": 0xFF08}  # Return, Tab, BackSpace


def keysym_for(char: str) -> int:
    """The X keysym that produces ``char``: Latin-1 keysyms equal the codepoint."""
    if char in _SPECIAL:
        return _SPECIAL[char]
    code = ord(char)
    return code if 0x20 <= code <= 0x7E or 0xA0 <= code <= 0xFF else 0x01000000 | code


def _left_behind(row) -> bool:
    """A character keysym at every level of its group(s): a binding made by an X11Typer
    that never closed (the server stores it as 2 groups x 2 levels). Real keymaps put
    NoSymbol at level 2 of one-level keys."""
    keysym = row[0]
    is_char = 0xA0 <= keysym <= 0xFF or 0x01000100 <= keysym <= 0x0110FFFF
    return is_char and len(row) >= 4 and all(k in (0, keysym) for k in row) and all(row[:4])


class X11Typer:
    """Types arbitrary text into the focused X11 window with XTEST key events."""

    def __init__(
        self,
        display_name: str | None = None,
        *,
        settle: float = 0.05,
        reuse_delay: float = 0.25,
        char_delay: float = 0.0,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        from Xlib import XK, error
        from Xlib.display import Display

        try:
            self._display = Display(display_name)
        except (error.DisplayError, error.ConnectionClosedError, OSError) as exc:
            raise DisplayError(f"cannot open X display {display_name!r} for typing: {exc}") from None
        if not self._display.has_extension("XTEST"):
            raise DisplayError("the X server has no XTEST extension: cannot send key events")
        self.settle = settle
        self.reuse_delay = reuse_delay
        self.char_delay = char_delay
        self.should_stop = should_stop or (lambda: False)
        self._shift = self._display.keysym_to_keycode(XK.string_to_keysym("Shift_L"))
        info = self._display.display.info
        first = info.min_keycode
        rows = self._display.get_keyboard_mapping(first, info.max_keycode - first + 1)
        self._width = len(rows[0])
        self.spare_keycodes: list[int] = []
        self._bound: OrderedDict[int, int] = OrderedDict()  # keysym -> keycode, least recent first
        self._on_keyboard: dict[int, tuple[int, bool]] = {}  # keysym -> (keycode, needs Shift)
        for i, row in reversed(list(enumerate(rows))):  # so the lowest keycode wins
            keycode = first + i
            if keycode == 8:  # left alone: some toolkits ignore it
                continue
            if not any(row):
                self.spare_keycodes.append(keycode)
            elif _left_behind(row):
                self.spare_keycodes.append(keycode)
                self._bound[row[0]] = keycode
            else:
                for level in (1, 0):  # level 0 wins over level 1
                    if len(row) > level and row[level]:
                        self._on_keyboard[row[level]] = (keycode, level == 1)
        self.spare_keycodes.reverse()
        self._last_activity = 0.0  # time.monotonic() of the last key press or keymap change

    def type(self, text: str) -> None:
        """Type ``text`` exactly; raise Interrupted if should_stop() turns true midway."""
        text = text.replace("\r\n", "\n")
        while text:
            count = self._bind_ahead(text)
            for char in text[:count]:
                if self.should_stop():
                    raise Interrupted("typing stopped by the kill switch")
                keysym = keysym_for(char)
                if keysym in self._on_keyboard:
                    self._press(*self._on_keyboard[keysym])
                else:
                    self._bound.move_to_end(keysym)
                    self._press(self._bound[keysym], False)
                if self.char_delay:
                    time.sleep(self.char_delay)
            text = text[count:]

    def close(self) -> None:
        """Remove the bindings (once clients have had time to use them) and disconnect.

        Safe to call twice, and after the X server has gone."""
        bound, self._bound = self._bound, OrderedDict()
        try:
            if bound:
                self._wait_idle()
                for keycode in bound.values():
                    self._display.change_keyboard_mapping(keycode, [(0,) * self._width])
                self._display.sync()
            self._display.close()
        except Exception:  # the server is gone: so are the bindings
            pass

    def _bind_ahead(self, text: str) -> int:
        """Bind what the longest typable start of ``text`` needs; return its length."""
        used: set[int] = set()  # unusual keysyms in the stretch
        count = len(text)
        for i, char in enumerate(text):
            keysym = keysym_for(char)
            if keysym in self._on_keyboard or keysym in used:
                continue
            if len(used) == len(self.spare_keycodes):
                if not used:
                    raise DisplayError(f"cannot type {char!r}: the X keymap has no spare keycode to bind it to")
                count = i
                break
            used.add(keysym)
        new = [k for k in dict.fromkeys(keysym_for(c) for c in text[:count]) if k in used and k not in self._bound]
        if not new:
            return count
        taken = set(self._bound.values())
        victims = [k for k in self.spare_keycodes if k not in taken]
        victims += [code for keysym, code in self._bound.items() if keysym not in used]  # LRU first
        self._wait_idle()
        for keysym, keycode in zip(new, victims):
            for old, code in list(self._bound.items()):
                if code == keycode:
                    del self._bound[old]
            self._display.change_keyboard_mapping(keycode, [(keysym,) * self._width])
            self._bound[keysym] = keycode
        self._display.sync()
        time.sleep(self.settle)
        self._last_activity = time.monotonic()
        return count

    def _wait_idle(self) -> None:
        delay = self._last_activity + self.reuse_delay - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _press(self, keycode: int, shift: bool) -> None:
        from Xlib import X
        from Xlib.ext.xtest import fake_input

        if shift:
            fake_input(self._display, X.KeyPress, self._shift)
        fake_input(self._display, X.KeyPress, keycode)
        fake_input(self._display, X.KeyRelease, keycode)
        if shift:
            fake_input(self._display, X.KeyRelease, self._shift)
        self._display.sync()
        self._last_activity = time.monotonic()
