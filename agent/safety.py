"""What keeps a run safe on a person's own screen: the kill switch, approvals and secrets.

* ``KillSwitch``: a global hotkey (pynput, no terminal focus needed). When pressed it
  sets a stop event and sends SIGINT to this process, so whatever the main thread is
  blocked in (a model request, a sleep, typing a long text) is interrupted at once; the
  loop then records the outcome as interrupted and the CLI exits 130.
* ``Approver``: asks approve / skip / edit / quit before an action runs, for every
  action with ``--confirm`` and always for risky key combinations (alt+f4, ...).
* ``Secrets``: ``{{secret:NAME}}`` placeholders in a task. The model and the recording
  see the placeholder; only the executor gets the value (from DESKPILOT_SECRET_NAME).
  ``Secrets.scrub`` removes every secret value and the API key from any text we write.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from actions.executor import Executor, PointScreen
from actions.schema import Action, Type, action_to_call
from agent.errors import DisplayError, ModelError, UsageError
from agent.parsing import parse_reply

DEFAULT_KILL_HOTKEY = "esc*3"
DEFAULT_ALWAYS_CONFIRM = (
    "ctrl+alt+delete",
    "ctrl+alt+backspace",
    "alt+f4",
    "super+l",
    "ctrl+alt+l",
    "ctrl+w",
    "ctrl+q",
    "shift+delete",
)
_SECRET = re.compile(r"\{\{\s*secret:([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


# --- secrets -------------------------------------------------------------------------


class Secrets:
    """Secret placeholders of a task and their values; scrubs them (and keys) from text."""

    def __init__(self, values: dict[str, str], extra: Iterable[str] = ()) -> None:
        self.values = values
        # each value as written and as it stands inside a JSON string (quotes, backslashes
        # escaped); longest first, so a secret containing another is scrubbed whole
        plain = {v for v in [*values.values(), *extra] if v and len(v) >= 3}
        forms = plain | {json.dumps(v, ensure_ascii=False)[1:-1] for v in plain}
        self._scrub = sorted(forms, key=len, reverse=True)

    @classmethod
    def from_task(cls, task: str, env: dict[str, str] | None = None, extra: Iterable[str] = ()) -> Secrets:
        """Read every {{secret:NAME}} of the task from DESKPILOT_SECRET_NAME, or say which is missing."""
        env = os.environ if env is None else env
        values = {}
        for name in dict.fromkeys(_SECRET.findall(task)):
            variable = f"DESKPILOT_SECRET_{name}"
            if not env.get(variable):
                raise UsageError(f"the task uses {{{{secret:{name}}}}}: set {variable} to its value")
            values[name] = env[variable]
        return cls(values, extra)

    def expand(self, text: str) -> str:
        """Put the values in place of the placeholders (only for the executor)."""
        return _SECRET.sub(lambda m: self.values.get(m.group(1), m.group(0)), text)

    def scrub(self, text: str) -> str:
        """Text with every secret value and key replaced by ***."""
        for value in self._scrub:
            text = text.replace(value, "***")
        return text


@dataclass
class SecretTypingExecutor:
    """Wraps an executor: ``type`` actions get their placeholders expanded just before typing."""

    inner: Executor
    secrets: Secrets

    def execute(self, action: Action, points_screen: list[PointScreen]) -> None:
        if isinstance(action, Type) and self.secrets.values:
            action = action.model_copy(update={"content": self.secrets.expand(action.content)})
        self.inner.execute(action, points_screen)


# --- approvals -----------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    verdict: str  # approve | skip | quit
    action: Action | None = None  # the (possibly edited) action to run


def _combo(keys: str) -> frozenset[str]:
    aliases = {
        "control": "ctrl",
        "win": "super",
        "cmd": "super",
        "command": "super",
        "meta": "super",
        "del": "delete",
        "return": "enter",
        "escape": "esc",
    }
    return frozenset(aliases.get(k.strip().lower(), k.strip().lower()) for k in keys.split("+") if k.strip())


class Approver:
    """Asks the person at the terminal before an action runs."""

    def __init__(
        self,
        confirm_all: bool,
        always: Iterable[str] = DEFAULT_ALWAYS_CONFIRM,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        self.confirm_all = confirm_all
        self.always = {_combo(k) for k in always}
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout

    def needs_approval(self, action: Action) -> bool:
        if action.kind in ("DONE", "FAIL", "WAIT"):
            return False
        if self.confirm_all:
            return True
        return action.kind == "key" and _combo(action.keys) in self.always

    def __call__(self, action: Action, points_screen: list[PointScreen]) -> Decision:
        if not self.needs_approval(action):
            return Decision("approve", action)
        preview = action_to_call(action) + "".join(f" at ({x}, {y})" for x, y in points_screen)
        why = "" if self.confirm_all else "  (this key combination always needs approval)"
        while True:
            self.stdout.write(f"\nplanned: {preview}{why}\n[a]pprove / [s]kip / [e]dit / [q]uit? ")
            self.stdout.flush()
            answer = self.stdin.readline()
            if not answer:  # no one to ask (stdin closed): do not act
                self.stdout.write("\n(no answer on stdin: quitting)\n")
                return Decision("quit")
            choice = answer.strip().lower()[:1]
            if choice == "a":
                return Decision("approve", action)
            if choice == "s":
                return Decision("skip")
            if choice == "q":
                return Decision("quit")
            if choice == "e":
                self.stdout.write("new action, e.g. left_click(start_box='[500,300]'): ")
                self.stdout.flush()
                edited = self._parse(self.stdin.readline())
                if edited is not None:
                    return Decision("approve", edited)

    def _parse(self, text: str) -> Action | None:
        try:
            return parse_reply(text.strip()).action
        except ModelError as exc:
            self.stdout.write(f"not an action: {exc}\n")
            return None


# --- kill switch ---------------------------------------------------------------------


def parse_hotkey(spec: str) -> tuple[str, int] | str:
    """'esc*3' -> ('esc', 3): one key pressed N times within 1.5 s;
    'ctrl+alt+q' -> '<ctrl>+<alt>+q' for pynput's GlobalHotKeys."""
    spec = spec.strip().lower()
    if "*" in spec:
        key, _, count = spec.partition("*")
        if not count.isdigit() or int(count) < 1 or "+" in key:
            raise UsageError(f"bad kill hotkey {spec!r}: use KEY*N (e.g. esc*3) or a combo like ctrl+alt+q")
        return key.strip(), int(count)
    parts = [p.strip() for p in spec.split("+") if p.strip()]
    if not parts:
        raise UsageError("empty kill hotkey: use KEY*N (e.g. esc*3) or a combo like ctrl+alt+q")
    return "+".join(p if len(p) == 1 else f"<{p}>" for p in parts)


def describe_hotkey(spec: str) -> str:
    """'esc*3' -> 'Esc pressed 3 times'; 'ctrl+alt+q' -> 'ctrl+alt+q'."""
    parsed = parse_hotkey(spec)
    if isinstance(parsed, tuple):
        key, count = parsed
        return f"{key.capitalize()} pressed {count} times" if count > 1 else key.capitalize()
    return spec.strip().lower()


class KillSwitch:
    """A global hotkey that stops the run from anywhere (see the module docstring)."""

    WINDOW_S = 1.5

    def __init__(self, spec: str = DEFAULT_KILL_HOTKEY, on_fire: Callable[[], None] | None = None) -> None:
        self.spec = spec
        self.parsed = parse_hotkey(spec)
        self.stop_event = threading.Event()
        self.fired_at: float | None = None
        self._on_fire = on_fire or self._interrupt_main
        self._listener: Any = None
        self._presses: list[float] = []

    def start(self) -> KillSwitch:
        try:
            from pynput import keyboard
        except Exception as exc:  # pynput raises at import without a display
            raise DisplayError(f"cannot listen for the kill hotkey ({exc}): is DISPLAY set?") from None
        if isinstance(self.parsed, tuple):
            key_name, _ = self.parsed
            target = getattr(keyboard.Key, key_name, None) or keyboard.KeyCode.from_char(key_name)

            def on_press(key: Any) -> None:
                if key == target:
                    self._count()

            self._listener = keyboard.Listener(on_press=on_press)
        else:
            self._listener = keyboard.GlobalHotKeys({self.parsed: self.fire})
        self._listener.daemon = True
        self._listener.start()
        self._listener.wait()
        return self

    def _count(self) -> None:
        now = time.monotonic()
        self._presses = [t for t in self._presses if now - t <= self.WINDOW_S] + [now]
        if len(self._presses) >= self.parsed[1]:  # type: ignore[index]
            self._presses.clear()
            self.fire()

    def fire(self) -> None:
        if self.stop_event.is_set():
            return
        self.fired_at = time.monotonic()
        self.stop_event.set()
        self._on_fire()

    @staticmethod
    def _interrupt_main() -> None:
        # A real signal (not _thread.interrupt_main) also breaks a blocking socket read.
        os.kill(os.getpid(), signal.SIGINT)

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    def __enter__(self) -> KillSwitch:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
