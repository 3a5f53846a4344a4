"""Key names as the model writes them, mapped to the names pyautogui presses.

``parse_combo("Ctrl+Shift+T")`` gives ``["ctrl", "shift", "t"]``. Names are matched without
regard to case, spaces, ``_`` or ``-`` (``Page_Down``, ``page down`` and ``PageDown`` are one
key), and the usual aliases are accepted: ``cmd``/``command``/``super``/``win``/``meta`` are
the logo key (pyautogui's ``win``, Super_L on X11; ``command`` on macOS), ``option`` is
``alt``, ``return`` is ``enter``, ``escape`` is ``esc``, ``del`` is ``delete``, ``pgup`` is
``pageup``, ``arrowleft`` is ``left``. A literal plus is ``plus`` or a trailing ``++``.

pyautogui *silently ignores* names it cannot press (on X11 that includes ``command``,
``option`` and the media keys), so every name is checked here: an unknown one raises
``agent.errors.InvalidArguments``, a model error that is shown back to the model.

``held_keys`` is the same parse seen from the approval gate: the set of keys the executor
holds down together, canonical (``ctrlleft`` and ``Control_R`` are ``ctrl``; the macOS
``command`` is ``win``; a shifted character such as ``!`` brings ``shift``, as pyautogui
presses it). This module is the one key vocabulary: the executor presses what
``parse_combo`` gives and the gate judges ``held_keys`` of the same text.
"""

from __future__ import annotations

import re
import sys

from agent.errors import InvalidArguments

# Multi-letter names pyautogui's X11 backend can press (they have a keycode there, and
# exist on Windows and macOS too).
PYAUTOGUI_NAMES = (
    frozenset(
        """
    backspace tab enter shift ctrl alt pause capslock esc pageup pagedown end home left up
    right down insert delete printscreen apps numlock scrolllock space win winleft winright
    shiftleft shiftright ctrlleft ctrlright altleft altright
    multiply add separator subtract decimal divide
    """.split()
    )
    | {f"f{i}" for i in range(1, 25)}
    | {f"num{i}" for i in range(10)}
)
# Single characters pyautogui presses (with Shift added for the shifted ones).
PYAUTOGUI_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789`-=[]\\;',./~!@#$%^&*()_+{}|:\"<>?")

_LOGO = ("win", "windows", "super", "meta", "cmd", "command", "logo", "mod4")
_MODIFIERS = {
    "ctrl": ("ctrl", "control", "ctl", "strg"),
    "shift": ("shift",),
    "alt": ("alt", "option", "opt"),
    "win": _LOGO,
}
_ALIASES = {
    "escape": "esc",
    "return": "enter",
    "ret": "enter",
    "kpenter": "enter",
    "numpadenter": "enter",
    "del": "delete",
    "forwarddelete": "delete",
    "bksp": "backspace",
    "pgup": "pageup",
    "prior": "pageup",
    "pgdn": "pagedown",
    "pgdown": "pagedown",
    "next": "pagedown",
    "ins": "insert",
    "caps": "capslock",
    "spacebar": "space",
    "break": "pause",
    "print": "printscreen",
    "prtsc": "printscreen",
    "prtscr": "printscreen",
    "prntscrn": "printscreen",
    "sysrq": "printscreen",
    "menu": "apps",
    "contextmenu": "apps",
    "application": "apps",
    "plus": "+",
    "minus": "-",
    "hyphen": "-",
    "equal": "=",
    "equals": "=",
    "comma": ",",
    "period": ".",
    "dot": ".",
    "slash": "/",
    "backslash": "\\",
    "semicolon": ";",
    "colon": ":",
    "quote": "'",
    "apostrophe": "'",
    "grave": "`",
    "backtick": "`",
    "tilde": "~",
    "bracketleft": "[",
    "leftbracket": "[",
    "bracketright": "]",
    "rightbracket": "]",
}
for _d in ("up", "down", "left", "right"):
    _ALIASES.update({"arrow" + _d: _d, _d + "arrow": _d, "kp" + _d: _d})
for _i in range(10):
    _ALIASES.update({f"kp{_i}": f"num{_i}", f"numpad{_i}": f"num{_i}"})
for _base, _names in _MODIFIERS.items():
    for _name in _names:
        _ALIASES[_name] = _base
        for _side, _full in (("l", "left"), ("left", "left"), ("r", "right"), ("right", "right")):
            _ALIASES[_side + _name] = _ALIASES[_name + _side] = _base + _full
_ALIASES["altgr"] = "altright"

_HINT = (
    "use names like ctrl, shift, alt, win, enter, esc, tab, backspace, delete, home, "
    "pageup, up, f5, a, 1 joined by '+', e.g. 'ctrl+shift+t'"
)


def key_name(name: str, platform: str = sys.platform) -> str:
    """The pyautogui name of one key, or raise InvalidArguments."""
    raw = name.strip()
    if len(raw) == 1:
        char = raw.lower()
        if char in PYAUTOGUI_CHARS:
            return char
        raise InvalidArguments(f"unknown key {name!r}: to enter text use the type action; {_HINT}")
    norm = re.sub(r"[\s_\-]+", "", raw.lower())
    key = _ALIASES.get(norm, norm)
    if platform == "darwin" and key.startswith("win"):
        key = "command"  # pyautogui's macOS name for the logo key
    if key in PYAUTOGUI_NAMES or key in PYAUTOGUI_CHARS or key == "command":
        return key
    raise InvalidArguments(f"unknown key {name!r}; {_HINT}")


def parse_combo(combo: str, platform: str = sys.platform) -> list[str]:
    """Split a combination such as 'ctrl+shift+t' into pyautogui key names, in press order."""
    text = combo.strip()
    tail = []
    if text == "+" or text.endswith("++"):  # the plus key itself: "+" or "ctrl++"
        text, tail = text[:-2].strip() if text != "+" else "", ["+"]
    tokens = [t.strip() for t in text.split("+")] if text else []
    if not tokens and not tail:
        raise InvalidArguments(f"empty key combination {combo!r}; {_HINT}")
    if any(not t for t in tokens):
        raise InvalidArguments(f"malformed key combination {combo!r} (empty name between '+'); {_HINT}")
    keys: list[str] = []
    for token in tokens:
        try:
            keys.append(key_name(token, platform))
        except InvalidArguments:
            words = token.split()
            if len(words) < 2:  # "ctrl c" is tried as two keys, "page down" was one
                raise
            keys.extend(key_name(w, platform) for w in words)
    return keys + tail


# Side variants and platform names folded into one canonical key per modifier.
_CANONICAL = {f"{base}{side}": base for base in _MODIFIERS for side in ("left", "right")} | {"command": "win"}
# pyautogui.isShiftCharacter: it holds Shift while pressing these.
_SHIFTED = frozenset('~!@#$%^&*()_+{}|:"<>?')


def held_keys(combo: str, platform: str = sys.platform) -> frozenset[str]:
    """The canonical keys held together when the executor presses ``combo``.

    Raises InvalidArguments exactly when ``parse_combo`` does (then nothing is pressed).
    """
    held: set[str] = set()
    for key in parse_combo(combo, platform):
        held.add(_CANONICAL.get(key, key))
        if key in _SHIFTED:
            held.add("shift")
    return frozenset(held)


def combo_text(keys: frozenset[str] | list[str]) -> str:
    """Canonical keys for people, modifiers first (ctrl, shift, alt, win), then the others in
    press order (a list) or by name (a set): ``ctrl+alt+delete``."""
    order = {name: i for i, name in enumerate(_MODIFIERS)}
    names = [_CANONICAL.get(k, k) for k in (sorted(keys) if isinstance(keys, frozenset) else keys)]
    return "+".join(sorted(dict.fromkeys(names), key=lambda k: (order.get(k, len(order)), names.index(k))))
