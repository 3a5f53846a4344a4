"""Key names and combinations the model writes, mapped to pyautogui's names (no display)."""

from __future__ import annotations

import pytest

from actions.keys import PYAUTOGUI_CHARS, PYAUTOGUI_NAMES, combo_text, held_keys, key_name, parse_combo
from agent.errors import InvalidArguments, ModelError


@pytest.mark.parametrize(
    ("combo", "keys"),
    [
        ("ctrl+shift+t", ["ctrl", "shift", "t"]),
        ("Ctrl+Shift+T", ["ctrl", "shift", "t"]),
        ("control+c", ["ctrl", "c"]),
        ("cmd+c", ["win", "c"]),
        ("command+space", ["win", "space"]),
        ("super", ["win"]),
        ("Win+D", ["win", "d"]),
        ("meta+l", ["win", "l"]),
        ("alt+f4", ["alt", "f4"]),
        ("option+tab", ["alt", "tab"]),
        ("esc", ["esc"]),
        ("Escape", ["esc"]),
        ("enter", ["enter"]),
        ("Return", ["enter"]),
        ("KP_Enter", ["enter"]),
        ("del", ["delete"]),
        ("Delete", ["delete"]),
        ("BackSpace", ["backspace"]),
        ("pgup", ["pageup"]),
        ("Page_Down", ["pagedown"]),
        ("page down", ["pagedown"]),
        ("PageUp", ["pageup"]),
        ("ArrowLeft", ["left"]),
        ("shift+Up", ["shift", "up"]),
        ("down_arrow", ["down"]),
        ("Home", ["home"]),
        ("ctrl+End", ["ctrl", "end"]),
        ("F12", ["f12"]),
        ("Tab", ["tab"]),
        ("spacebar", ["space"]),
        ("Insert", ["insert"]),
        ("PrtSc", ["printscreen"]),
        ("ctrl+plus", ["ctrl", "+"]),
        ("ctrl++", ["ctrl", "+"]),
        ("+", ["+"]),
        ("ctrl+minus", ["ctrl", "-"]),
        ("ctrl+/", ["ctrl", "/"]),
        ("ctrl+slash", ["ctrl", "/"]),
        (" ctrl + a ", ["ctrl", "a"]),
        ("ctrl c", ["ctrl", "c"]),
        ("Control_L+Shift_R", ["ctrlleft", "shiftright"]),
        ("left ctrl", ["ctrlleft"]),
        ("ctrl+1", ["ctrl", "1"]),
    ],
)
def test_aliases_map_to_pyautogui_names(combo, keys):
    assert parse_combo(combo, platform="linux") == keys


def test_every_result_is_a_name_pyautogui_presses():
    for combo in ("cmd+option+shift+ctrl+escape", "pgdn+del+return+arrowup+f24+kp_5"):
        for key in parse_combo(combo, platform="linux"):
            assert key in PYAUTOGUI_NAMES or key in PYAUTOGUI_CHARS


def test_logo_key_is_command_on_macos():
    assert parse_combo("cmd+q", platform="darwin") == ["command", "q"]
    assert parse_combo("super+space", platform="darwin") == ["command", "space"]


@pytest.mark.parametrize("combo", ["ctrl+foo", "hyperdrive", "volumeup", "é", "ctrl+€"])
def test_unknown_key_is_a_model_error_naming_it(combo):
    with pytest.raises(InvalidArguments) as info:
        parse_combo(combo)
    assert isinstance(info.value, ModelError)
    assert "unknown key" in str(info.value) and "e.g. 'ctrl+shift+t'" in str(info.value)
    assert combo.split("+")[-1] in str(info.value)


@pytest.mark.parametrize("combo", ["", "   ", "ctrl+", "++a", "ctrl++shift+a"])
def test_malformed_combination_is_a_model_error(combo):
    with pytest.raises(InvalidArguments, match="key combination"):
        parse_combo(combo)


def test_single_non_keyboard_character_points_to_the_type_action():
    with pytest.raises(InvalidArguments, match="type action"):
        key_name("ü")


@pytest.mark.parametrize(
    ("combo", "held"),
    [
        ("Control_R+Alt_L+Del", {"ctrl", "alt", "delete"}),
        ("lctrl+w", {"ctrl", "w"}),
        ("winleft+l", {"win", "l"}),
        ("Super_R+L", {"win", "l"}),
        ("altgr+f4", {"alt", "f4"}),
        ("ctrl+shift+ctrlright+t", {"ctrl", "shift", "t"}),
        ("ctrl++", {"ctrl", "shift", "+"}),  # pyautogui holds Shift for a shifted character
        ("ctrl+!", {"ctrl", "shift", "!"}),
        ("ctrl+Q", {"ctrl", "q"}),  # letters are lowered: no Shift
    ],
)
def test_held_keys_are_canonical(combo, held):
    assert held_keys(combo, platform="linux") == held


def test_held_keys_fold_the_macos_command_key():
    assert parse_combo("cmd+q", platform="darwin") == ["command", "q"]
    assert held_keys("cmd+q", platform="darwin") == held_keys("win+q", platform="linux") == {"win", "q"}


@pytest.mark.parametrize("combo", ["ctrl+foo", "ctrl+", "", "volumeup", "ctrl alt hyperdrive"])
def test_held_keys_reject_what_the_executor_rejects(combo):
    with pytest.raises(InvalidArguments):
        parse_combo(combo)
    with pytest.raises(InvalidArguments):
        held_keys(combo)


@pytest.mark.parametrize(
    ("keys", "text"),
    [
        (["shiftleft", "ctrlright", "t"], "ctrl+shift+t"),
        (["win", "alt", "ctrl", "delete"], "ctrl+alt+win+delete"),
        (frozenset({"delete", "alt", "ctrl"}), "ctrl+alt+delete"),
        (["f4", "a"], "f4+a"),
    ],
)
def test_combo_text_puts_modifiers_first(keys, text):
    assert combo_text(keys) == text
