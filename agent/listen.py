"""Listening to a person's keyboard and mouse, for ``deskpilot record``.

A source calls ``on_event(InputEvent)`` from its own thread for every key press and release,
button press and release, pointer motion and wheel click, with the time it happened
(``time.monotonic`` seconds) and pointer positions in screen space. Keys are already named in
the one key vocabulary (``actions.keys``): ``key`` is the canonical name of a key that types
nothing (``ctrl``, ``enter``, ``f5``), ``char`` the text a key types with Shift and Caps Lock
applied, ``base`` the character the key gives unshifted (``t`` for the ``T`` of ctrl+shift+t).

* ``X11Source`` (Linux): one RECORD-extension context for the device events *and* the
  ``ChangeKeyboardMapping`` requests of every client, in the server's own order. It keeps its
  own copy of the keymap up to date from those requests, so a character typed by binding it
  to a spare keycode for one key press (xdotool, deskpilot's own X11 typer, on-screen
  keyboards) is read as that character; pynput reads keycodes with the keymap it loaded at
  start and reports such keys as nothing. Event times come from the X server's timestamps,
  mapped onto the monotonic clock by the smallest delay seen so far, so a listener thread
  that runs late still says when the key was really pressed. A keyboard layout switched
  during a recording with XKB requests (setxkbmap) is not followed.
* ``PynputSource`` (macOS, Windows): pynput's keyboard and mouse listeners; times are when the
  callback ran.

Keys outside the vocabulary (media keys) and the keys that only change what other keys type
(Caps Lock, Num Lock, AltGr) are reported with neither ``key`` nor ``char``: the recorder
leaves them out. python-xlib and pynput are
imported inside the sources: this module imports without a display.
"""

from __future__ import annotations

import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from actions.keys import combo_text, parse_combo
from agent.display import check_display
from agent.errors import DisplayError, InvalidArguments

EventKind = Literal["key_down", "key_up", "button_down", "button_up", "motion", "wheel"]
MODIFIERS = frozenset({"ctrl", "shift", "alt", "win"})
BUTTONS = {1: "left", 2: "middle", 3: "right"}
WHEEL = {4: 1, 5: -1}  # X buttons 4 and 5: one wheel click up, down (6 and 7, sideways, are left out)


@dataclass(frozen=True)
class InputEvent:
    """One thing the person did with the keyboard or the mouse (see the module docstring)."""

    kind: EventKind
    t: float  # time.monotonic() seconds
    x: int = 0  # pointer position, screen space
    y: int = 0
    button: str = ""  # left / middle / right
    wheel: int = 0  # +1 one click up, -1 one click down
    key: str = ""  # canonical name of a key that types nothing: ctrl, shift, enter, f5...
    char: str = ""  # what the key types, Shift and Caps Lock applied
    base: str = ""  # the key's unshifted character, for combinations
    frame: Any = None  # the screen just before it (attached by the recorder)


Sink = Callable[[InputEvent], None]


def vocabulary_name(name: str) -> str:
    """The canonical vocabulary name of one key (``Control_L`` -> ``ctrl``, ``Page_Down`` ->
    ``pagedown``, ``KP_Home`` -> ``home``), or "" when the vocabulary has no such key."""
    for candidate in (name, name[3:] if name.upper().startswith("KP_") else None):
        if not candidate or "+" in candidate or " " in candidate.strip():
            continue
        try:
            return combo_text(parse_combo(candidate))
        except InvalidArguments:
            continue
    return ""


def char_key(char: str) -> str:
    """A character as a key name of the vocabulary, for a combination (``" "`` -> ``space``)."""
    if char == " ":
        return "space"
    if char == "+":
        return "+"
    return vocabulary_name(char)


# --- X11 --------------------------------------------------------------------------------

_KEYPAD_CHARS = {0xFFAA: "*", 0xFFAB: "+", 0xFFAD: "-", 0xFFAE: ".", 0xFFAF: "/", 0xFF80: " ", 0xFFBD: "="} | {
    0xFFB0 + d: str(d) for d in range(10)
}
# Keysyms that are modifiers of text rather than keys of the vocabulary
_X11_NAMES = {"ISO_Left_Tab": "tab", "Meta_L": "alt", "Meta_R": "alt", "Hyper_L": "win", "Hyper_R": "win"}
_LOCKS = frozenset(
    {"Caps_Lock", "Num_Lock", "Scroll_Lock", "Shift_Lock", "ISO_Level3_Shift", "Mode_switch", "script_switch"}
)
_CHANGE_KEYBOARD_MAPPING = 100  # the core request's opcode
_SHIFT, _LOCK, _LEVEL3 = 0x01, 0x02, 0x80  # ShiftMask, LockMask, Mod5Mask (AltGr on most layouts)


def _keysym_chars() -> dict[int, str]:
    """Keysym -> character for the named keysyms (Greek, Cyrillic, dead keys...): pynput's
    table, the one it reads its own keysyms with."""
    try:
        from pynput._util.xorg_keysyms import SYMBOLS
    except Exception:  # pragma: no cover - pynput is a dependency; Latin-1 and Unicode keysyms still work
        return {}
    return {
        value[0]: value[1]
        for value in SYMBOLS.values()
        if isinstance(value, tuple) and value[1] and value[1].isprintable()
    }


def keysym_char(keysym: int, table: dict[int, str]) -> str:
    """The character a keysym types ("" for none): Latin-1 and Unicode keysyms by rule, the keypad's
    digits and operators, the other named keysyms from ``table``."""
    if 0x20 <= keysym <= 0x7E or 0xA0 <= keysym <= 0xFF:
        return chr(keysym)
    if 0x01000100 <= keysym <= 0x0110FFFF:
        char = chr(keysym - 0x01000000)
        return char if char.isprintable() else ""
    if keysym in _KEYPAD_CHARS:
        return _KEYPAD_CHARS[keysym]
    if 0xFF00 <= keysym <= 0xFFFF:  # function keys: Return, Tab, BackSpace... are keys, not text
        return ""
    return table.get(keysym, "")


class X11Keymap:
    """The server's keymap (keycode -> keysyms per level), kept up to date from the
    ChangeKeyboardMapping requests seen in the recorded stream."""

    def __init__(self, rows: dict[int, list[int]]) -> None:
        from Xlib import XK

        self.rows = rows
        self._chars = _keysym_chars()
        XK.load_keysym_group("xkb")  # ISO_Left_Tab, ISO_Level3_Shift
        self._names = {value: name[3:] for name, value in vars(XK).items() if name.startswith("XK_")}

    def change(self, request: bytes, swapped: bool) -> int:
        """Apply the ChangeKeyboardMapping requests in ``request`` (as intercepted, in the
        client's byte order); returns the bytes used."""
        order = ">" if (sys.byteorder == "little") == swapped else "<"
        _, count, length = struct.unpack(order + "BBH", request[:4])
        first, per_keycode = struct.unpack(order + "BB", request[4:6])
        symbols = struct.unpack(order + f"{count * per_keycode}I", request[8 : 8 + 4 * count * per_keycode])
        for i in range(count):
            self.rows[first + i] = list(symbols[i * per_keycode : (i + 1) * per_keycode])
        return max(4, 4 * length)

    def keysym(self, keycode: int, level: int) -> int:
        row = self.rows.get(keycode, [])
        return row[level] if level < len(row) and row[level] else 0

    def resolve(self, keycode: int, state: int) -> tuple[str, str, str]:
        """(key, char, base) of a key press in modifier ``state`` (see ``InputEvent``)."""
        levels = (4, 5) if state & _LEVEL3 else (0, 1)
        base_sym = self.keysym(keycode, levels[0]) or self.keysym(keycode, 0)
        name = self._names.get(base_sym, "")
        if name in _LOCKS:
            return "", "", ""
        base = keysym_char(base_sym, self._chars)
        if not base:
            return _X11_NAMES.get(name) or vocabulary_name(name), "", ""
        shifted = bool(state & _SHIFT)
        char = base
        if shifted:
            upper_sym = self.keysym(keycode, levels[1])
            char = keysym_char(upper_sym, self._chars) if upper_sym else base.upper()
        if state & _LOCK and char.isalpha():
            char = char.lower() if shifted else char.upper()
        base_key = base.lower() if len(base.lower()) == 1 else base
        return "", char, base_key


class X11Source:
    """The person's input on an X server, through RECORD (see the module docstring)."""

    def __init__(self, on_event: Sink, display_name: str | None = None) -> None:
        self.on_event = on_event
        self.display_name = display_name
        self._thread: threading.Thread | None = None
        self._offset: float | None = None  # monotonic seconds minus server seconds, smallest seen
        self._down: dict[int, tuple[str, str, str]] = {}  # keycode -> what its press was
        self._failure: BaseException | None = None

    def start(self) -> X11Source:
        from Xlib import X
        from Xlib import display as xdisplay
        from Xlib.ext import record

        if self.display_name is None:
            check_display()
        try:
            self._control = xdisplay.Display(self.display_name)
            self._record = xdisplay.Display(self.display_name)
        except Exception as exc:  # DisplayNameError, DisplayConnectionError
            raise DisplayError(f"cannot open the X display to record input ({exc}): is DISPLAY right?") from None
        if not self._record.has_extension("RECORD"):
            self.close()
            raise DisplayError("the X server has no RECORD extension, which recording needs to see input")
        info = self._control.display.info
        first = info.min_keycode
        rows = self._control.get_keyboard_mapping(first, info.max_keycode - first + 1)
        self.keymap = X11Keymap({first + i: list(row) for i, row in enumerate(rows)})
        self._context = self._record.record_create_context(
            0,
            [record.AllClients],
            [
                {
                    "core_requests": (_CHANGE_KEYBOARD_MAPPING, _CHANGE_KEYBOARD_MAPPING),
                    "core_replies": (0, 0),
                    "ext_requests": (0, 0, 0, 0),
                    "ext_replies": (0, 0, 0, 0),
                    "delivered_events": (0, 0),
                    "device_events": (X.KeyPress, X.MotionNotify),
                    "errors": (0, 0),
                    "client_started": False,
                    "client_died": False,
                }
            ],
        )
        started = threading.Event()

        def run() -> None:
            try:
                self._record.record_enable_context(self._context, lambda reply: self._reply(reply, started))
            except BaseException as exc:  # the connection broke: the recorder sees no more input
                self._failure = exc
            finally:
                started.set()

        self._thread = threading.Thread(target=run, name="deskpilot-record-input", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise DisplayError("the X server did not start recording input within 10 s")
        if self._failure is not None:
            raise DisplayError(f"cannot record input on the X server ({self._failure})")
        return self

    def _reply(self, reply: Any, started: threading.Event) -> None:
        from Xlib.ext import record

        if reply.category == record.StartOfData:
            started.set()
            return
        try:
            self._handle(reply)
        except Exception as exc:  # a bug here must not end the X connection's reader silently
            self._failure = exc

    def _handle(self, reply: Any) -> None:
        from Xlib.ext import record

        data = reply.data
        if reply.category == record.FromClient:
            while len(data) >= 8:
                data = data[self.keymap.change(data, bool(reply.client_swapped)) :]
        elif reply.category == record.FromServer:
            from Xlib.protocol import rq

            parser = rq.EventField(None)
            while len(data) >= 32:
                event, data = parser.parse_binary_value(data, self._record.display, None, None)
                translated = self._translate(event)
                if translated is not None:
                    self.on_event(translated)

    def _time(self, server_ms: int) -> float:
        """The event's server timestamp on the monotonic clock (the smallest delay seen so far)."""
        now = time.monotonic()
        offset = now - server_ms / 1000
        if self._offset is None or offset < self._offset or offset - self._offset > 5.0:
            self._offset = offset  # first event, a shorter delay, or the 32-bit millisecond clock wrapped
        return min(now, server_ms / 1000 + self._offset)

    def _translate(self, event: Any) -> InputEvent | None:
        from Xlib import X

        t = self._time(event.time)
        if event.type == X.KeyPress:
            key, char, base = self.keymap.resolve(event.detail, event.state)
            self._down[event.detail] = (key, char, base)
            return InputEvent("key_down", t, key=key, char=char, base=base)
        if event.type == X.KeyRelease:
            key, char, base = self._down.pop(event.detail, ("", "", ""))
            return InputEvent("key_up", t, key=key, char=char, base=base)
        x, y = event.root_x, event.root_y
        if event.type == X.MotionNotify:
            return InputEvent("motion", t, x, y)
        if event.type == X.ButtonPress and event.detail in WHEEL:
            return InputEvent("wheel", t, x, y, wheel=WHEEL[event.detail])
        if event.type in (X.ButtonPress, X.ButtonRelease) and event.detail in BUTTONS:
            kind: EventKind = "button_down" if event.type == X.ButtonPress else "button_up"
            return InputEvent(kind, t, x, y, button=BUTTONS[event.detail])
        return None

    def close(self) -> None:
        """Stop recording and close the connections (safe to call twice)."""
        context = getattr(self, "_context", None)
        control = getattr(self, "_control", None)
        if context is not None and control is not None:
            try:
                control.record_disable_context(context)
                control.sync()
            except Exception:  # the server went away first
                pass
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if context is not None and control is not None:
            try:
                control.record_free_context(context)
                control.sync()
            except Exception:
                pass
        self._context = None
        for name in ("_record", "_control"):
            connection = getattr(self, name, None)
            if connection is not None:
                try:
                    connection.close()
                except Exception:
                    pass
                setattr(self, name, None)


# --- pynput (macOS, Windows) --------------------------------------------------------------


def pynput_key(key: Any) -> tuple[str, str, str]:
    """(key, char, base) of a pynput key: a ``Key`` member by its name, a ``KeyCode`` by its
    character (a control character, as Windows reports ctrl+c, back to its letter)."""
    char = getattr(key, "char", None)
    name = getattr(key, "name", None)
    if name == "space":
        return "", " ", " "
    if name in ("alt_gr", "caps_lock", "num_lock", "scroll_lock"):  # they change what other keys type
        return "", "", ""
    if name:
        return vocabulary_name(name), "", ""
    if not char:
        return "", "", ""
    if len(char) == 1 and ord(char) < 0x20:  # ctrl+letter on Windows
        letter = chr(ord(char) + 0x60)
        return "", "", letter
    base = char.lower() if len(char) == 1 else char
    return "", char if char.isprintable() else "", base


class PynputSource:
    """The person's input through pynput's listeners (macOS, Windows)."""

    def __init__(self, on_event: Sink) -> None:
        self.on_event = on_event
        self._listeners: list[Any] = []

    def start(self) -> PynputSource:
        try:
            from pynput import keyboard, mouse
        except Exception as exc:  # pynput raises at import without a display
            raise DisplayError(f"cannot listen to the keyboard and mouse ({exc})") from None
        emit = self.on_event
        buttons = {mouse.Button.left: "left", mouse.Button.middle: "middle", mouse.Button.right: "right"}

        def key(kind: EventKind) -> Callable[..., None]:
            def on_key(k: Any, *rest: Any) -> None:
                name, char, base = pynput_key(k)
                emit(InputEvent(kind, time.monotonic(), key=name, char=char, base=base))

            return on_key

        def click(x: float, y: float, button: Any, pressed: bool, *rest: Any) -> None:
            if button in buttons:
                kind: EventKind = "button_down" if pressed else "button_up"
                emit(InputEvent(kind, time.monotonic(), int(x), int(y), button=buttons[button]))

        def scroll(x: float, y: float, dx: float, dy: float, *rest: Any) -> None:
            if dy:
                emit(InputEvent("wheel", time.monotonic(), int(x), int(y), wheel=1 if dy > 0 else -1))

        def move(x: float, y: float, *rest: Any) -> None:
            emit(InputEvent("motion", time.monotonic(), int(x), int(y)))

        self._listeners = [
            keyboard.Listener(on_press=key("key_down"), on_release=key("key_up")),
            mouse.Listener(on_click=click, on_scroll=scroll, on_move=move),
        ]
        for listener in self._listeners:
            listener.daemon = True
            listener.start()
            listener.wait()
        return self

    def close(self) -> None:
        for listener in self._listeners:
            listener.stop()
        self._listeners = []


def start_source(on_event: Sink) -> X11Source | PynputSource:
    """The platform's input source, started: X11Source on Linux, PynputSource elsewhere."""
    if sys.platform.startswith("linux"):
        return X11Source(on_event).start()
    return PynputSource(on_event).start()
