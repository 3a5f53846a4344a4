"""What keeps a run safe on a person's own screen: the kill switch, approvals and secrets.

* ``KillSwitch``: a global hotkey (pynput, no terminal focus needed). When pressed it
  sets a stop event and sends SIGINT to this process, so whatever the main thread is
  blocked in (a model request, a sleep, typing a long text) is interrupted at once; the
  loop then records the outcome as interrupted and the CLI exits 130.
* ``Takeover``: a second global hotkey (F9 by default) with which the person takes the
  desktop over between two steps and hands it back; the loop records that as a human step.
  Both are a ``Hotkey``: a key pressed N times (``esc*3``), one key or a combination.
* ``Approver``: asks approve / skip / edit / quit before an action runs, for every
  action with ``--confirm`` and always for key actions that hold a risky combination
  (alt+f4, ...). Keys are judged with ``actions.keys.held_keys``, the parse the executor
  presses from, so every spelling the executor accepts (``ctl+w``, ``option f4``,
  ``Control_R+Alt_L+Del``) and every superset (``ctrl+alt+delete+a``) is caught. The
  preview is built here from the action (``actions.executor.describe``), never from text
  the model could have shaped: control characters are shown as escapes, typed text is
  shown whole and a line break in it is named.
* ``Secrets``: ``{{secret:NAME}}`` placeholders in a task. The model and the recording
  see the placeholder; only the executor gets the value (from DESKPILOT_SECRET_NAME).
  ``Secrets.scrub`` removes every secret value and the API key from any text we write,
  in every form the value takes in our artifacts (see ``secret_forms``).
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from actions.executor import Executor, PointScreen, describe
from actions.keys import combo_text, held_keys
from actions.schema import Action, Type, action_to_call
from agent.errors import DisplayError, Interrupted, InvalidArguments, ModelError, UsageError
from agent.parsing import parse_reply
from agent.text import printable, quoted

DEFAULT_KILL_HOTKEY = "esc*3"
DEFAULT_TAKEOVER_HOTKEY = "f9"
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
MIN_SECRET_LENGTH = 4
_SECRET = re.compile(r"\{\{\s*secret:([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


# --- secrets -------------------------------------------------------------------------


def _repr_forms(text: str) -> set[str]:
    """The inside of ``repr(text)`` and ``ascii(text)`` in both quote styles, as Python writes
    them: with ' quotes (a ' escaped) and, when the text has no ", with " quotes (a ' bare)."""
    forms = set()
    for function in (repr, ascii):
        forms.add(function(text + '"')[1:-2])  # with a " in it, Python always picks '
        if '"' not in text:
            forms.add(function("'" + text)[2:-1])  # a ' and no ": Python picks "
    return forms


# One step of escaping a text can go through on its way into an artifact or onto a screen.
_ENCODINGS: tuple[Callable[[str], set[str]], ...] = (
    lambda t: {json.dumps(t, ensure_ascii=False)[1:-1], json.dumps(t)[1:-1]},  # JSON, \\uXXXX or not
    _repr_forms,
    lambda t: {html.escape(t, quote=True), html.escape(t, quote=False)},
    lambda t: {printable(t), quoted(t)[1:-1]},  # what terminals and action_to_call show
)


def secret_forms(value: str, depth: int = 3) -> set[str]:
    """Every form ``value`` takes after up to ``depth`` escapings, one on another: plain,
    JSON (with and without ``\\uXXXX``), JSON inside JSON (tool-call arguments in a
    recorded reply), Python repr and ascii in both quote styles, HTML (quote on and off),
    and ``printable``/``quoted`` as the terminal shows it; HTML of JSON of JSON is the raw
    reply in report.html."""
    forms = {value}
    frontier = {value}
    for _ in range(depth):
        frontier = {form for text in frontier for encode in _ENCODINGS for form in encode(text)} - forms
        forms |= frontier
    return forms


class Secrets:
    """Secret placeholders of a task and their values; scrubs them (and keys) from text."""

    def __init__(self, values: dict[str, str], extra: Iterable[str] = ()) -> None:
        """``values``: NAME -> value, each at least MIN_SECRET_LENGTH characters (else
        UsageError); ``extra``: more values to scrub, e.g. the API key (shorter ones, such
        as a local server's placeholder key ``x``, are not secrets and are left alone)."""
        for name, value in values.items():
            if len(value) < MIN_SECRET_LENGTH:
                raise UsageError(
                    f"the value of {{{{secret:{name}}}}} (DESKPILOT_SECRET_{name}) is {len(value)} characters long: "
                    f"secrets shorter than {MIN_SECRET_LENGTH} characters cannot be scrubbed from logs and "
                    "recordings without corrupting them (scrubbing '42' replaced it in 11 unrelated places, "
                    "coordinates and timings); use a longer value, or type a short one yourself"
                )
        self.values = values
        plain = {v for v in [*values.values(), *extra] if len(v) >= MIN_SECRET_LENGTH}
        forms = {form for value in plain for form in secret_forms(value)}
        # one pass; longest first, so a form that contains another is scrubbed whole
        alternatives = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
        self._pattern = re.compile(alternatives) if forms else None

    @classmethod
    def from_task(cls, task: str, env: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> Secrets:
        """Read every {{secret:NAME}} of the task from DESKPILOT_SECRET_NAME, or say which is missing."""
        source = os.environ if env is None else env
        values = {}
        for name in dict.fromkeys(_SECRET.findall(task)):
            variable = f"DESKPILOT_SECRET_{name}"
            if not source.get(variable):
                raise UsageError(f"the task uses {{{{secret:{name}}}}}: set {variable} to its value")
            values[name] = source[variable]
        return cls(values, extra)

    def expand(self, text: str) -> str:
        """Put the values in place of the placeholders (only for the executor)."""
        return _SECRET.sub(lambda m: self.values.get(m.group(1), m.group(0)), text)

    def scrub(self, text: str) -> str:
        """Text with every form of every secret value and key replaced by ***."""
        return self._pattern.sub("***", text) if self._pattern is not None else text


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


def parse_risky_combos(combos: str | Iterable[str]) -> list[frozenset[str]]:
    """``--always-confirm`` entries (comma-separated text, or a list) as held-key sets, parsed
    like the executor parses keys; a bad entry is a UsageError naming it."""
    entries = combos.split(",") if isinstance(combos, str) else list(combos)
    risky = []
    for entry in entries:
        if not entry.strip():
            continue
        try:
            risky.append(held_keys(entry))
        except InvalidArguments as exc:
            raise UsageError(
                f"--always-confirm: {quoted(entry)} is not a key combination ({exc}); "
                "separate combinations with ',' (the comma key is 'comma')"
            ) from None
    return risky


class Approver:
    """Asks the person at the terminal before an action runs."""

    def __init__(
        self,
        confirm_all: bool,
        always: str | Iterable[str] = DEFAULT_ALWAYS_CONFIRM,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        *,
        scrub: Callable[[str], str] | None = None,
    ) -> None:
        """``always``: key combinations that need approval even without ``confirm_all``
        (UsageError for a bad one); ``scrub``: applied to model text before it is shown
        (``Secrets.scrub``)."""
        self.confirm_all = confirm_all
        self.always = parse_risky_combos(always)
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.scrub = scrub

    def risky_combo(self, action: Action) -> frozenset[str] | None:
        """The risky combination a key action would hold down, if any. A combination the
        executor rejects (an unknown key) presses nothing and is not risky."""
        if action.kind != "key":
            return None
        try:
            held = held_keys(action.keys)
        except InvalidArguments:
            return None
        return next((combo for combo in self.always if combo <= held), None)

    def needs_approval(self, action: Action) -> bool:
        if action.kind in ("DONE", "FAIL", "WAIT", "call_user"):  # nothing is pressed or moved
            return False
        return self.confirm_all or self.risky_combo(action) is not None

    def __call__(self, action: Action, points_screen: Sequence[PointScreen] = ()) -> Decision:
        """Ask about ``action`` aimed at ``points_screen`` (screen space), unless it needs no approval."""
        if not self.needs_approval(action):
            return Decision("approve", action)
        points = list(points_screen)
        risky = self.risky_combo(action)
        why = f"  ({combo_text(risky)} always needs approval)" if risky is not None else ""
        while True:
            preview = describe(action, points, scrub=self.scrub)
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
        """The person's edit, read by the parser model replies go through (never evaluated);
        a key combination the executor would reject is refused here, before it runs."""
        try:
            action = parse_reply(text.strip()).action
            if action.kind == "key":
                held_keys(action.keys)
        except ModelError as exc:
            self.stdout.write(f"not an action: {printable(exc)}\n")
            return None
        shown = action_to_call(action)
        self.stdout.write(f"edited: {self.scrub(shown) if self.scrub else shown}\n")
        return action


# --- hotkeys: the kill switch and the takeover ------------------------------------------


def parse_hotkey(spec: str, what: str = "kill hotkey") -> tuple[str, int] | str:
    """'esc*3' -> ('esc', 3): one key pressed N times within 1.5 s;
    'ctrl+alt+q' -> '<ctrl>+<alt>+q' and 'f9' -> '<f9>' for pynput's GlobalHotKeys.
    ``what`` names the hotkey in the error message."""
    spec = spec.strip().lower()
    if "*" in spec:
        key, _, count = spec.partition("*")
        if not count.isdigit() or int(count) < 1 or "+" in key:
            raise UsageError(f"bad {what} {spec!r}: use KEY*N (e.g. esc*3), a key (f9) or a combo like ctrl+alt+q")
        return key.strip(), int(count)
    parts = [p.strip() for p in spec.split("+") if p.strip()]
    if not parts:
        raise UsageError(f"empty {what}: use KEY*N (e.g. esc*3), a key (f9) or a combo like ctrl+alt+q")
    return "+".join(p if len(p) == 1 else f"<{p}>" for p in parts)


def describe_hotkey(spec: str) -> str:
    """'esc*3' -> 'Esc pressed 3 times'; 'f9' -> 'F9'; 'ctrl+alt+q' -> 'ctrl+alt+q'."""
    parsed = parse_hotkey(spec)
    if isinstance(parsed, tuple):
        key, count = parsed
        return f"{key.capitalize()} pressed {count} times" if count > 1 else key.capitalize()
    spec = spec.strip().lower()
    return spec if "+" in spec else spec.capitalize()


class Hotkey:
    """A global hotkey (pynput: no terminal focus needed) that calls ``on_fire`` from the
    listener's thread. The spec is ``parse_hotkey``'s: KEY*N, a key, or a combination."""

    WINDOW_S = 1.5  # the N presses of KEY*N fall within this many seconds

    def __init__(self, spec: str, on_fire: Callable[[], None], what: str = "kill hotkey") -> None:
        self.spec = spec
        self.what = what
        self.parsed = parse_hotkey(spec, what)
        self._on_fire = on_fire
        self._listener: Any = None
        self._presses: list[float] = []

    def start(self) -> Hotkey:
        """Start listening; DisplayError when pynput cannot listen (no display, no RECORD extension)."""
        try:
            from pynput import keyboard
        except Exception as exc:  # pynput raises at import without a display
            raise DisplayError(f"cannot listen for the {self.what} ({exc}): is DISPLAY set?") from None
        if isinstance(self.parsed, tuple):
            key_name, _ = self.parsed
            target = getattr(keyboard.Key, key_name, None) or keyboard.KeyCode.from_char(key_name)

            def on_press(key: Any) -> None:
                if key == target:
                    self._count()

            self._listener = keyboard.Listener(on_press=on_press)
        else:
            try:
                self._listener = keyboard.GlobalHotKeys({self.parsed: self._on_fire})
            except ValueError as exc:  # a key name pynput does not know
                raise UsageError(f"bad {self.what} {self.spec!r}: {exc}") from None
        self._listener.daemon = True
        self._listener.start()
        self._listener.wait()
        return self

    def _count(self) -> None:
        now = time.monotonic()
        self._presses = [t for t in self._presses if now - t <= self.WINDOW_S] + [now]
        if isinstance(self.parsed, tuple) and len(self._presses) >= self.parsed[1]:
            self._presses.clear()
            self._on_fire()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None


class KillSwitch:
    """A global hotkey that stops the run from anywhere (see the module docstring)."""

    def __init__(self, spec: str = DEFAULT_KILL_HOTKEY, on_fire: Callable[[], None] | None = None) -> None:
        self.spec = spec
        self.stop_event = threading.Event()
        self._on_fire = on_fire or self._interrupt_main
        self._hotkey = Hotkey(spec, self.fire)
        self.parsed = self._hotkey.parsed

    def start(self) -> KillSwitch:
        self._hotkey.start()
        return self

    def fire(self) -> None:
        if self.stop_event.is_set():
            return
        self.stop_event.set()
        self._on_fire()

    @staticmethod
    def _interrupt_main() -> None:
        # A real signal (not _thread.interrupt_main) also breaks a blocking socket read.
        os.kill(os.getpid(), signal.SIGINT)

    def stop(self) -> None:
        self._hotkey.stop()

    def __enter__(self) -> KillSwitch:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Takeover:
    """The person takes the desktop over between steps (the loop's ``takeover`` hook).

    Pressing the hotkey asks the agent to pause once its current action is done
    (``requested``); the loop then calls ``hold``, which blocks while the person works and
    returns when the same hotkey is pressed again. Pressed twice before the agent got
    there, the request is withdrawn. ``say`` tells the person what is happening."""

    def __init__(
        self,
        spec: str = DEFAULT_TAKEOVER_HOTKEY,
        say: Callable[[str], None] | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        """``stop_event`` (the kill switch's) ends a hold at once with Interrupted."""
        self.spec = spec
        self._say = say or (lambda line: None)
        self._stop = stop_event
        self._wanted = threading.Event()  # set: the person wants (or has) the desktop
        self._hotkey = Hotkey(spec, self.toggle, what="takeover hotkey")

    def start(self) -> Takeover:
        self._hotkey.start()
        return self

    def stop(self) -> None:
        self._hotkey.stop()

    def toggle(self) -> None:
        """What the hotkey does: ask for the desktop, or hand it back."""
        if self._wanted.is_set():
            self._wanted.clear()
        else:
            self._wanted.set()
            self._say(f"deskpilot: {describe_hotkey(self.spec)} pressed: pausing after the current action")

    def requested(self) -> bool:
        return self._wanted.is_set()

    def hold(self) -> None:
        """Block while the person has the desktop; Interrupted if the kill switch fires meanwhile."""
        key = describe_hotkey(self.spec)
        self._say(f"deskpilot: paused: the desktop is yours; press {key} again to hand it back")
        while self._wanted.is_set():
            if self._stop is not None and self._stop.is_set():
                raise Interrupted("stopped by the kill switch while the person had the desktop")
            time.sleep(0.05)
        self._say("deskpilot: resumed: the model will see the screen as you left it")
