"""Recording a person's demonstration (``deskpilot record``): from their input to a recording.

The person works as usual; what they do becomes the steps of a recording that ``replay``
checks, simulates and executes like a run's (header ``mode: human``, no model replies).

* ``RollingCapture``: a thread grabs the monitor every ``FRAME_INTERVAL_S`` and keeps the
  last ``FRAMES_KEPT`` frames, each stamped with the time its grab had completed. An input
  event is given ``before(t)``, the newest frame complete before the event happened: the
  screen the action was aimed at, not the one it changed.
* ``Coalescer`` (pure, no threads, no display): turns ``agent.listen.InputEvent`` s into
  ``Gesture`` s, one per action of ``actions.schema``:

  - a left press and release is a click; a second one within ``DOUBLE_CLICK_S`` within
    ``SAME_SPOT_PX`` of the first makes them one ``left_double_click``; right and middle
    presses are clicks at once;
  - a left press, motion beyond ``DRAG_PX`` and release is a ``left_drag``;
  - wheel clicks in one direction at one place (within ``SCROLL_SPOT_PX``), each within
    ``SCROLL_GAP_S`` of the last, are one ``scroll`` whose step is the number of clicks
    (at most 50, the schema's limit; sideways wheels are left out);
  - keys that type text (Shift and Caps Lock included) are one ``type`` until a pointer
    action, a key that types nothing, or a pause of ``TYPE_PAUSE_S``; Backspace while such a
    text is being typed takes back its last character instead of becoming a key;
  - a key with Ctrl, Alt or the logo key held is one ``key`` action naming the whole
    combination in the key vocabulary (``ctrl+shift+t``); so is a key that types nothing
    (``enter``, ``shift+tab``); Alt or the logo key pressed and released alone is a ``key``
    too (Shift or Ctrl alone are not). Modifiers held during a click are not recorded:
    the action space has no modified click.
  - the kill hotkey ends the recording and is not recorded: presses of a ``KEY*N`` hotkey
    are held back until N of them fall within ``Hotkey.WINDOW_S`` (then dropped) or
    another action or the window's end shows they were ordinary keys; a combination hotkey
    is dropped at once. ``ctrl+c`` is held back ``INTERRUPT_WINDOW_S``: when Ctrl-C in the
    terminal stops the recording, the key press that sent it is not an action.

* ``Demonstrator``: takes events from the listener threads (``feed``), attaches the frame,
  and in ``run`` (the caller's thread) coalesces them and writes a ``Step`` per gesture:
  the pre-action screenshot, each target in screen, image and model space (thousandths of
  the capture), the action and its trained call text, when it started (``started_at``) and
  how long it took (``timings.execute_s``). With a window scope (``--window``) the
  screenshot is the window's area and actions outside it (or keys while another window has
  the focus) are left out. ``mask_typing`` records ``{{secret:TYPED_N}}`` for each typed
  text and never the text. ``describe`` (``ModelDescriber``: one grounding request per
  target) fills ``element_info``. The outcome is ``done`` with "recorded N actions" however
  it was stopped (kill hotkey, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from actions.keys import combo_text, held_keys
from actions.schema import ACTION_ADAPTER, Action, action_to_call
from agent.capture import Screen, Screenshot
from agent.config import Settings
from agent.errors import DeskpilotError, DisplayError, Interrupted, InvalidArguments, UsageError
from agent.geometry import MonitorGeometry, Target, image_to_model, screen_to_image
from agent.grounding import Grounded, ask
from agent.image import prepare_for_model
from agent.listen import MODIFIERS, InputEvent, char_key
from agent.planner import Planner, PlannerResult
from agent.protocol import StepRequest
from agent.safety import DEFAULT_KILL_HOTKEY, Hotkey, parse_hotkey
from agent.trajectory import JsonlRecorder, Outcome, OutcomeStatus, Step, Timings

FRAME_INTERVAL_S = 0.1
FRAMES_KEPT = 5
DOUBLE_CLICK_S = 0.5
SAME_SPOT_PX = 4
DRAG_PX = 5
SCROLL_GAP_S = 0.6
SCROLL_SPOT_PX = 16
MAX_SCROLL = 50
TYPE_PAUSE_S = 2.0
INTERRUPT_KEYS = "ctrl+c"
INTERRUPT_WINDOW_S = 1.0
LONE_KEYS = frozenset({"alt", "win"})
COMBO_MODIFIERS = frozenset({"ctrl", "alt", "win"})
DESCRIPTION_LIMIT = 100
PointScreen = tuple[int, int]


# --- the rolling capture -----------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One capture and the time (``time.monotonic``) its grab had completed."""

    t: float
    shot: Screenshot


class RollingCapture:
    """Grabs the monitor every ``interval`` seconds in a thread of its own, keeping the last
    ``keep`` frames. ``open_screen`` is called in that thread (an mss grabber belongs to
    the thread that made it)."""

    def __init__(
        self,
        open_screen: Callable[[], Screen],
        interval: float = FRAME_INTERVAL_S,
        keep: int = FRAMES_KEPT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open = open_screen
        self.interval, self.keep, self.clock = interval, keep, clock
        self._frames: list[Frame] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def start(self) -> RollingCapture:
        """Start grabbing; returns once the first frame is in (or raises what opening the screen raised)."""
        self._thread = threading.Thread(target=self._run, name="deskpilot-rolling-capture", daemon=True)
        self._thread.start()
        self._first.wait()
        if self.failure is not None:
            raise self.failure
        return self

    def _run(self) -> None:
        screen: Any = None
        try:
            screen = self._open()
            while not self._stop.is_set():
                began = self.clock()
                shot = screen.capture()
                done = self.clock()
                with self._lock:
                    self._frames = [*self._frames[-(self.keep - 1) :], Frame(done, shot)]
                self._first.set()
                # a slow grab (a large screen) is not allowed to take more than a third of the time
                self._stop.wait(max(self.interval - (done - began), 2 * (done - began)))
        except BaseException as exc:
            self.failure = exc if isinstance(exc, DeskpilotError) else DisplayError(f"screen capture failed: {exc}")
        finally:
            self._first.set()
            close = getattr(screen, "close", None)
            if close is not None:
                close()

    def before(self, t: float) -> Frame:
        """The newest frame whose grab completed before ``t`` (the oldest kept if none did)."""
        with self._lock:
            frames = list(self._frames)
        if not frames:
            raise DisplayError("no screen was captured yet")
        earlier = [f for f in frames if f.t <= t]
        return earlier[-1] if earlier else frames[0]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


# --- from input events to gestures -------------------------------------------------------


@dataclass
class Gesture:
    """One action of the person, in screen space, before it becomes a Step."""

    kind: str  # an action kind of actions.schema
    t_start: float
    t_end: float
    points_screen: list[PointScreen] = field(default_factory=list)
    frame: Frame | None = None
    keys: str = ""  # key
    text: str = ""  # type
    direction: str = ""  # scroll
    steps: int = 0  # scroll


@dataclass
class _Press:
    event: InputEvent
    double: bool  # the second press of a double click
    farthest: float = 0.0  # how far the pointer moved from the press, screen units


def _distance(a: PointScreen, b: PointScreen) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def kill_hotkey_keys(spec: str) -> tuple[str, int, frozenset[str]]:
    """``--kill-hotkey`` in the key vocabulary: (key, times) for ``KEY*N``, or the combination's
    held keys; a spec that names no key is a UsageError."""
    parsed = parse_hotkey(spec)
    try:
        if isinstance(parsed, tuple):
            return combo_text(held_keys(parsed[0])), parsed[1], frozenset()
        return "", 0, held_keys(spec)
    except InvalidArguments as exc:
        raise UsageError(f"bad kill hotkey {spec!r} ({exc})") from None


class Coalescer:
    """Input events in, gestures out (the rules are in the module docstring).

    ``feed`` takes one event and returns the gestures it completed; ``idle(now)`` those
    whose time ran out; ``finish`` the rest. ``stopped`` turns true when the kill hotkey was
    pressed; no gesture is made after that."""

    def __init__(self, kill_hotkey: str = DEFAULT_KILL_HOTKEY) -> None:
        self._kill_key, self._kill_count, self._kill_combo = kill_hotkey_keys(kill_hotkey)
        self.held: set[str] = set()
        self.stopped = False
        self._lone: InputEvent | None = None  # a modifier pressed alone, so far
        self._pending: Gesture | None = None  # text being typed, a click that may become double, a scroll, ctrl+c
        self._kill_presses: list[Gesture] = []
        self._pressed: _Press | None = None

    # the three entry points

    def feed(self, event: InputEvent) -> list[Gesture]:
        out: list[Gesture] = []
        if self.stopped:
            return out
        if event.kind == "motion":
            if self._pressed is not None:
                start = (self._pressed.event.x, self._pressed.event.y)
                self._pressed.farthest = max(self._pressed.farthest, _distance(start, (event.x, event.y)))
        elif event.kind == "key_up":
            self._key_up(event, out)
        elif event.kind == "key_down":
            self._key_down(event, out)
        elif event.kind == "button_down":
            self._button_down(event, out)
        elif event.kind == "button_up":
            self._button_up(event, out)
        elif event.kind == "wheel":
            self._wheel(event, out)
        return out

    def idle(self, now: float) -> list[Gesture]:
        """Gestures complete because nothing followed them in time."""
        out: list[Gesture] = []
        pending = self._pending
        if pending is not None and self._pressed is None:
            limits = {"type": TYPE_PAUSE_S, "left_click": DOUBLE_CLICK_S, "scroll": SCROLL_GAP_S}
            since = pending.t_start if pending.kind == "left_click" else pending.t_end
            if now - since > limits.get(pending.kind, INTERRUPT_WINDOW_S):
                self._flush(out)
        self._release_kill_presses(now, out)
        return out

    def finish(self, interrupted_at: float | None = None) -> list[Gesture]:
        """Everything still held back. ``interrupted_at``: when Ctrl-C stopped the recording;
        a ctrl+c pressed within ``INTERRUPT_WINDOW_S`` of it is that Ctrl-C, not an action."""
        pending = self._pending
        if (
            interrupted_at is not None
            and pending is not None
            and pending.kind == "key"
            and pending.t_start >= interrupted_at - INTERRUPT_WINDOW_S
        ):
            self._pending = None
        out: list[Gesture] = []
        self._flush(out)
        out.extend(self._kill_presses)
        self._kill_presses = []
        self._pressed = None
        return out

    # keys

    def _key_down(self, event: InputEvent, out: list[Gesture]) -> None:
        name, char = event.key, event.char
        if name in MODIFIERS:
            if name not in self.held:  # not the key's auto-repeat
                self._lone = event if not self.held and self._pressed is None else None
                self.held.add(name)
            return
        self._lone = None
        combo = bool(self.held & COMBO_MODIFIERS)
        key = name or (char_key(event.base) if combo else "")
        if not key and not char:
            return  # a key the vocabulary has no name for (media keys), or Caps Lock and the like
        kill_name = name or char_key(event.base)
        if not combo and kill_name and kill_name == self._kill_key:
            self._flush(out)
            press = Gesture("key", event.t, event.t, frame=event.frame, keys=self._with_shift(kill_name))
            self._kill_press(press, out)
            return
        self._release_kill_presses(None, out)
        if combo or not char:
            modifiers = [m for m in ("ctrl", "shift", "alt", "win") if m in self.held]
            if not combo and key == "backspace" and self._pending is not None and self._pending.kind == "type":
                self._pending.text = self._pending.text[:-1]  # a typo taken back
                self._pending.t_end = event.t
                return
            keys = combo_text(modifiers + [key])
            if self._kill_combo and held_keys(keys) == self._kill_combo:
                self._flush(out)
                self.stopped = True
                return
            gesture = Gesture("key", event.t, event.t, frame=event.frame, keys=keys)
            self._flush(out)
            if keys == INTERRUPT_KEYS:
                self._pending = gesture  # may be the Ctrl-C that stops the recording
            else:
                out.append(gesture)
            return
        pending = self._pending
        if pending is not None and pending.kind == "type" and event.t - pending.t_end <= TYPE_PAUSE_S:
            pending.text += char
            pending.t_end = event.t
        else:
            self._flush(out)
            self._pending = Gesture("type", event.t, event.t, frame=event.frame, text=char)

    def _key_up(self, event: InputEvent, out: list[Gesture]) -> None:
        name = event.key
        if name not in MODIFIERS:
            return
        self.held.discard(name)
        lone, self._lone = self._lone, None
        if lone is not None and lone.key == name and name in LONE_KEYS:
            self._release_kill_presses(None, out)
            self._flush(out)
            out.append(Gesture("key", lone.t, event.t, frame=lone.frame, keys=name))

    def _with_shift(self, key: str) -> str:
        return combo_text((["shift"] if "shift" in self.held else []) + [key])

    def _kill_press(self, press: Gesture, out: list[Gesture]) -> None:
        self._release_kill_presses(press.t_start, out)
        self._kill_presses.append(press)
        if len(self._kill_presses) >= self._kill_count:
            self._kill_presses = []
            self.stopped = True

    def _release_kill_presses(self, now: float | None, out: list[Gesture]) -> None:
        """Kill-key presses that turned out to be ordinary keys: all of them (``now`` None),
        or those that fell out of the hotkey's window."""
        window = Hotkey.WINDOW_S
        keep = [p for p in self._kill_presses if now is not None and now - p.t_start <= window]
        out.extend(p for p in self._kill_presses if p not in keep)
        self._kill_presses = keep

    # the pointer

    def _button_down(self, event: InputEvent, out: list[Gesture]) -> None:
        self._lone = None
        self._release_kill_presses(None, out)
        pending = self._pending
        double = (
            event.button == "left"
            and pending is not None
            and pending.kind == "left_click"
            and event.t - pending.t_start <= DOUBLE_CLICK_S
            and _distance(pending.points_screen[0], (event.x, event.y)) <= SAME_SPOT_PX
        )
        if not double:
            self._flush(out)
        self._pressed = _Press(event, double)

    def _button_up(self, event: InputEvent, out: list[Gesture]) -> None:
        press = self._pressed
        if press is None or press.event.button != event.button:
            return  # released a button pressed before the recording began
        self._pressed = None
        start, end = (press.event.x, press.event.y), (event.x, event.y)
        moved = max(press.farthest, _distance(start, end))
        if event.button == "left" and moved > DRAG_PX:
            self._flush(out)  # a first click that never became double
            out.append(Gesture("left_drag", press.event.t, event.t, [start, end], press.event.frame))
        elif press.double and self._pending is not None:
            first, self._pending = self._pending, None
            out.append(Gesture("left_double_click", first.t_start, event.t, first.points_screen, first.frame))
        elif event.button == "left":
            self._pending = Gesture("left_click", press.event.t, event.t, [start], press.event.frame)
        else:
            out.append(Gesture(f"{event.button}_click", press.event.t, event.t, [start], press.event.frame))

    def _wheel(self, event: InputEvent, out: list[Gesture]) -> None:
        self._lone = None
        self._release_kill_presses(None, out)
        direction = "up" if event.wheel > 0 else "down"
        pending = self._pending
        if (
            pending is not None
            and pending.kind == "scroll"
            and pending.direction == direction
            and event.t - pending.t_end <= SCROLL_GAP_S
            and _distance(pending.points_screen[0], (event.x, event.y)) <= SCROLL_SPOT_PX
            and pending.steps < MAX_SCROLL
        ):
            pending.steps += 1
            pending.t_end = event.t
            return
        self._flush(out)
        self._pending = Gesture(
            "scroll", event.t, event.t, [(event.x, event.y)], event.frame, direction=direction, steps=1
        )

    def _flush(self, out: list[Gesture]) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not (pending.kind == "type" and not pending.text):
            out.append(pending)


# --- describing targets with the model ---------------------------------------------------


@dataclass
class Described:
    """What the model said a gesture's targets are, and what asking cost."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class Describe(Protocol):
    def __call__(self, shot: Screenshot, targets: list[Target]) -> Described: ...


class ModelDescriber:
    """Names the element under each target with one grounding request to the model: it is
    asked to point at the element at the target's thousandths with ``hover`` and say in
    ``element_info`` what it is. The reply goes through the parser like any reply (never
    evaluated); a reply that names nothing leaves the description empty."""

    def __init__(self, planner: Planner, settings: Settings, attempts: int = 2) -> None:
        self.planner, self.settings, self.attempts = planner, settings, attempts

    def __call__(self, shot: Screenshot, targets: list[Target]) -> Described:
        described = Described()
        sent = prepare_for_model(shot.image, self.settings.max_image_tokens, self.settings.image_encoding)
        names = []
        for target in targets:
            x, y = target.box_model[:2]
            task = (
                f"Do not change anything on the screen. Name the user interface element at the point [{x},{y}] "
                f"(thousandths of the screenshot's width and height): answer with hover(start_box='[{x},{y}]', "
                "element_info='...') where element_info says in a few words what the element is, e.g. "
                "'OK button' or 'Name text field'."
            )

            def request(feedback: str | None, no_thinking: bool, task: str = task) -> StepRequest:
                return StepRequest(task, 1, sent, [], [], feedback, no_thinking)

            def count(result: PlannerResult, error: Exception | None) -> None:
                raw = result.raw
                described.prompt_tokens += raw.prompt_tokens
                described.completion_tokens += raw.completion_tokens
                described.cost_usd += self.settings.cost(raw.prompt_tokens, raw.completion_tokens)

            def names_it(grounded: Grounded) -> None:
                if not getattr(grounded.action, "element_info", "").strip():
                    raise InvalidArguments("give element_info: what the element at the point is, in a few words")

            grounded, _ = ask(self.planner, request, shot.monitor, self.attempts, count, names_it)
            if grounded is not None:
                names.append(" ".join(getattr(grounded.action, "element_info", "").split())[:DESCRIPTION_LIMIT])
        described.text = " to ".join(n for n in names if n)
        described.cost_usd = round(described.cost_usd, 8)
        return described


# --- the recorder ------------------------------------------------------------------------


class Scope(Protocol):
    """A window scope (agent.window.WindowScope): where the window is, what it refuses."""

    def rect_screen(self) -> tuple[int, int, int, int]: ...

    def refuse(self, kind: str, points_screen: list[tuple[int, int]]) -> str | None: ...


@dataclass
class StopRequest:
    """Why and when the recording was asked to stop (set from a signal handler or a thread)."""

    event: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    at: float | None = None  # time.monotonic()
    interrupt: bool = False  # Ctrl-C: the key press that sent it is not an action

    def set(self, reason: str, *, interrupt: bool = False, at: float | None = None) -> None:
        if not self.event.is_set():
            self.reason, self.interrupt = reason, interrupt
            self.at = time.monotonic() if at is None else at
            self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


def crop_to_window(shot: Screenshot, rect_screen: tuple[int, int, int, int]) -> Screenshot | None:
    """The part of a monitor's capture a window covers, with its own geometry (its origin in
    screen space), or None when the window is not on that monitor."""
    monitor = shot.monitor
    left, top, width, height = rect_screen
    right_screen = monitor.left + monitor.width / monitor.scale
    bottom_screen = monitor.top + monitor.height / monitor.scale
    x1, y1 = max(left, monitor.left), max(top, monitor.top)
    x2, y2 = min(left + width, right_screen), min(top + height, bottom_screen)
    if x2 <= x1 or y2 <= y1:
        return None
    a_image = screen_to_image((x1, y1), monitor)
    b_image = screen_to_image((int(x2), int(y2)), monitor)
    image = shot.image.crop((*a_image, *b_image))
    return Screenshot(image, MonitorGeometry(x1, y1, image.width, image.height, monitor.scale))


class Demonstrator:
    """Turns the person's input into a recording (see the module docstring)."""

    def __init__(
        self,
        capture: RollingCapture,
        recorder: JsonlRecorder,
        *,
        kill_hotkey: str = DEFAULT_KILL_HOTKEY,
        mask_typing: bool = False,
        describe: Describe | None = None,
        scope: Scope | None = None,
        on_step: Callable[[Step], None] | None = None,
        on_left_out: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capture, self.recorder = capture, recorder
        self.coalescer = Coalescer(kill_hotkey)
        self.mask_typing, self.describe, self.scope = mask_typing, describe, scope
        self.on_step, self.on_left_out, self.clock = on_step, on_left_out, clock
        self.steps: list[Step] = []
        self.left_out = 0  # gestures outside the monitor or the window scope
        self._typed = 0  # masked texts so far
        self._queue: queue.Queue[InputEvent] = queue.Queue()
        self._wall_offset = time.time() - time.monotonic()
        self._totals = Described()

    def feed(self, event: InputEvent) -> None:
        """Take one event from a listener thread; an event that starts an action gets its frame."""
        if event.kind in ("key_down", "button_down", "wheel"):
            event = replace(event, frame=self.capture.before(event.t))
        self._queue.put(event)

    def run(self, stop: StopRequest, close_input: Callable[[], None] = lambda: None) -> Outcome:
        """Record until the kill hotkey or ``stop``; then ``close_input`` (no more events),
        take in what is left, write the outcome and return it."""
        started = self.clock()
        outcome: Outcome | None = None
        try:
            while not stop.is_set() and not self.coalescer.stopped:
                if self.capture.failure is not None:
                    raise self.capture.failure
                try:
                    event = self._queue.get(timeout=0.05)
                except queue.Empty:
                    self._write(self.coalescer.idle(self.clock()))
                    continue
                self._write(self.coalescer.feed(event))
            close_input()
            why = "the kill hotkey" if self.coalescer.stopped else stop.reason
            while True:  # what the listener saw before it stopped
                try:
                    event = self._queue.get_nowait()
                except queue.Empty:
                    break
                if stop.at is None or event.t <= stop.at:
                    self._write(self.coalescer.feed(event))
            self._write(self.coalescer.finish(stop.at if stop.interrupt else None))
            count = len(self.steps)
            outcome = self._outcome("done", f"recorded {count} action{'' if count == 1 else 's'}; stopped by {why}")
        except (KeyboardInterrupt, Interrupted) as exc:
            outcome = self._outcome("interrupted", f"interrupted ({exc or 'Ctrl-C'}) after {len(self.steps)} actions")
            raise Interrupted(outcome.message) from None
        except DeskpilotError as exc:
            outcome = self._outcome("error", str(exc))
            raise
        finally:
            if outcome is None:
                outcome = self._outcome("error", "the recording stopped on an internal error")
            outcome = outcome.model_copy(update={"duration_s": round(self.clock() - started, 3)})
            self.recorder.finish(outcome)
        return outcome

    def _outcome(self, status: OutcomeStatus, message: str) -> Outcome:
        return Outcome(
            status=status,
            message=message,
            steps=len(self.steps),
            prompt_tokens=self._totals.prompt_tokens,
            completion_tokens=self._totals.completion_tokens,
            cost_usd=round(self._totals.cost_usd, 8),
        )

    def _write(self, gestures: list[Gesture]) -> None:
        for gesture in gestures:
            step = self._step(gesture)
            if step is None:
                continue
            self.steps.append(step)
            self.recorder.write_step(step)
            if self.on_step is not None:
                self.on_step(step)

    def _leave_out(self, why: str) -> None:
        self.left_out += 1
        if self.on_left_out is not None:
            self.on_left_out(why)

    def _step(self, gesture: Gesture) -> Step | None:
        frame = gesture.frame or self.capture.before(gesture.t_start)
        shot = frame.shot
        points = gesture.points_screen
        if self.scope is not None:
            reason = self.scope.refuse(gesture.kind, points)
            window = crop_to_window(frame.shot, self.scope.rect_screen()) if reason is None else None
            if window is None:
                self._leave_out(f"{gesture.kind}: {reason or 'the window is not on the recorded monitor'}")
                return None
            shot = window
        geometry = shot.monitor
        targets = []
        for point_screen in points:
            point_image = screen_to_image(point_screen, geometry)
            if not (0 <= point_image[0] < geometry.width and 0 <= point_image[1] < geometry.height):
                self._leave_out(f"{gesture.kind} at {point_screen}: outside the recorded monitor")
                return None
            targets.append(Target(image_to_model(point_image, geometry.size_image), point_image, point_screen))
        described = Described()
        if self.describe is not None and targets:
            described = self.describe(shot, targets)
            for name in ("prompt_tokens", "completion_tokens", "cost_usd"):
                setattr(self._totals, name, getattr(self._totals, name) + getattr(described, name))
        action = self._action(gesture, targets, described.text)
        number = len(self.steps) + 1
        return Step(
            step=number,
            started_at=round(self._wall_offset + gesture.t_start, 4),
            screenshot=self.recorder.save_screenshot(number, shot.image),
            geometry=geometry,
            action=action.model_dump(mode="json"),
            action_text=action_to_call(action),
            targets=targets,
            timings=Timings(execute_s=round(gesture.t_end - gesture.t_start, 4)),
            prompt_tokens=described.prompt_tokens,
            completion_tokens=described.completion_tokens,
            cost_usd=described.cost_usd,
        )

    def _action(self, gesture: Gesture, targets: list[Target], element_info: str) -> Action:
        fields: dict[str, Any] = {"kind": gesture.kind}
        for name, target in zip(("start_box", "end_box"), targets):
            fields[name] = list(target.box_model)
        if targets and element_info:
            fields["element_info"] = element_info
        if gesture.kind == "key":
            fields["keys"] = gesture.keys
        elif gesture.kind == "type":
            if self.mask_typing:
                self._typed += 1
                fields["content"] = f"{{{{secret:TYPED_{self._typed}}}}}"
            else:
                fields["content"] = gesture.text
        elif gesture.kind == "scroll":
            fields["direction"], fields["step"] = gesture.direction, gesture.steps
        return ACTION_ADAPTER.validate_python(fields)
