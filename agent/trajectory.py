"""Recordings: the trajectory schema (v1), the recorder that writes it, and the loader.

A recording is a folder ``recordings/<timestamp>-<slug>/`` holding:

* ``header.json`` (``Header``): schema version, task, start time (UTC, ISO 8601), deskpilot
  version, mode (run / dry-run, or human: recorded from a person by ``deskpilot record``), provider, model, protocol, thinking, the monitor's geometry
  and scale (filled in at the first step), the image budget, the price table used for cost
  estimates, and ``settings``: every public setting of the run. Never an API key.
* ``steps.jsonl``: one ``Step`` per line, appended, flushed and fsynced by the recorder's
  writer thread, after the step's screenshot. A run killed at any point (SIGKILL included)
  leaves every step written so far readable; the steps still in the writer's queue (at most
  ``QUEUE_STEPS``, the last ones) are lost.
* ``screens/step-NNNN.png``: the full capture of each step (image space, lossless); a
  human step (the person took the desktop over) also has ``step-NNNN-after.png``.
* ``outcome.json`` (``Outcome``): how the run ended. Missing after a crash or a kill: the
  recording then loads with outcome ``incomplete``.

A ``Step`` holds, in this order of the loop:

* ``screenshot``, ``geometry`` (the monitor in screen space; width/height in image pixels);
* what was sent: ``sent`` (size, encoding, bytes, visual tokens of the image the model saw);
* the request summary: ``prompt_text`` (the request's text with images shown as
  ``[image WxH]``), ``history_lines`` (earlier steps given as text), ``history_images``
  (of those, how many with a half-size screenshot), ``estimated_tokens``, ``memory_in``
  (the Memory list the model was given);
* ``attempts``: one ``Attempt`` per request within the step. ``raw`` is the server's reply
  verbatim (``content``, ``reasoning``, ``tool_calls``, ``finish_reason``,
  ``prompt_tokens``, ``completion_tokens``, ``model``); ``error``/``error_type`` say why
  it was rejected (then shown back to the model); ``transport_retries`` one note per
  retried HTTP request; ``latency_s``; ``protocol`` (tools / text / scripted);
* the accepted reply: ``action`` (the validated action, coordinates in model space),
  ``action_text`` (the trained call syntax), ``thought``, ``memory``;
* ``targets``: for a pointing action or a drag, each point in model space (thousandths,
  ``box_model``), image space (``point_image``) and screen space (``point_screen``);
* ``zoom`` (``Zoom``, when the step zoomed in to re-ground its point): why, the crop
  rectangle in image pixels, the crop as sent, the element asked for, the first answer's
  ``first`` targets, the zoom request's ``attempts``, tokens, cost and time, and whether its
  answer was used (then ``targets`` hold it, in thousandths of the crop, with the crop);
* ``screen_changed`` / ``changed_fraction``: did the action change the screen (the
  screen before it against the screen once settled; None: not measured, e.g. a dry run),
  and ``loop`` (``LoopCheck``) when the step completed a loop (the same action on an
  unchanged screen three times, or an A-B-A-B cycle) and how the run responded;
* ``timings`` (capture / prepare / record_wait / model / zoom / execute / settle, seconds;
  ``frame``: captured for the step or the settle's quiet frame; ``ahead``), ``prompt_tokens``,
  ``completion_tokens``, ``cost_usd`` (summed over the attempts and the zoom request, from
  the header's price table) and ``error`` (why the step produced no action, or what stopped it);
* the person's part: ``decision``/``note`` (the approval prompt, the window scope, or
  ``takeover``: a human step, with no reply and ``screenshot_after``), ``proposed_action``
  (the model's own action when the person edited it) and ``user_answer`` (to call_user).

Fields added later have defaults, so older recordings load unchanged.

A step recorded from a person (``Step.by_person``) has an action and no ``attempts``: its
``started_at`` is when the person began the action, ``timings.execute_s`` how long it took,
and its targets hold the pixel the person pointed at (``box_model`` is the nearest thousandth).

``load`` reads a recording back. Every problem is a ``UsageError`` (exit 2) naming the file
and, for ``steps.jsonl``, the line: a missing file, a header or outcome that is not a UTF-8
JSON object, a line that is not UTF-8 or not JSON, an unknown schema version, a field of
the wrong shape, steps not numbered 1, 2, 3... in order, an outcome that counts a different
number of steps than ``steps.jsonl`` holds, a screenshot path that leads outside the
recording (absolute, ``..``, or a symlink out), a screenshot that is missing, does not
decode or declares more pixels than Pillow's decompression-bomb limit. One exception: in a
run that never wrote its outcome (killed), a last line without its newline is the step
that was being written; its bytes are dropped before decoding and the outcome says so.

``JsonlRecorder`` writes screenshots and step lines in one writer thread, in the order they
were given, so the loop never waits for the disk unless ``QUEUE_STEPS`` steps are already
queued. It turns a failed write (full disk, read-only folder, any ``OSError``) into a
``UsageError`` that says what failed and what to do (raised by the next call after it
happened, or by ``finish``), and leaves the folder loadable: a step line is written whole or
cut back off, a screenshot a step names is on disk before the step line, nothing is written
after a failure, and ``header.json``/``outcome.json`` are replaced atomically or left as they were.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import re
import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from agent import __version__
from agent.errors import UsageError
from agent.geometry import MonitorGeometry, Target
from agent.imagefile import open_image, save_png
from agent.threads import lower_priority

SCHEMA_VERSION = 1
QUEUE_STEPS = 2  # steps whose screenshot or line may wait for the writer before the loop waits too
OutcomeStatus = Literal[
    "done", "fail", "max_steps", "max_time", "max_cost", "stuck", "interrupted", "error", "incomplete"
]
_SECRET_KEYS = frozenset({"api_key", "apikey", "authorization", "key", "token", "password"})


class SentInfo(BaseModel):
    """The screenshot as sent to the model."""

    width: int
    height: int
    encoding: str
    bytes: int
    tokens: int


class Attempt(BaseModel):
    """One request to the model within a step, and what came of it."""

    raw: dict[str, Any] = Field(
        description="the reply verbatim: content, reasoning, tool_calls, "
        "finish_reason, prompt_tokens, completion_tokens, model"
    )
    error: str | None = Field(None, description="why the reply was rejected (shown back to the model)")
    error_type: str | None = None
    latency_s: float = 0.0
    transport_retries: list[str] = Field(default_factory=list)
    protocol: str = ""
    ttft_s: float | None = Field(None, description="streamed: seconds from the request to the first token")
    action_s: float | None = Field(None, description="streamed: seconds to the moment the action was complete")
    total_s: float | None = Field(None, description="seconds from the request to the end of the reply")


class Timings(BaseModel):
    """Where a step's time went, in seconds, in the order of the loop."""

    capture_s: float = Field(0.0, description="grabbing the screen (about 0 when the settle's frame was used)")
    prepare_s: float = Field(
        0.0, description="resizing and encoding the model's image, or waiting for the settle's preparation ahead"
    )
    record_wait_s: float = Field(0.0, description="waiting for room in the recorder's queue (0 unless it is full)")
    frame: Literal["capture", "settle"] = Field(
        "capture",
        description="the screenshot was captured for the step, or is the frame that proved the screen settled",
    )
    ahead: bool = Field(False, description="the model's image was prepared while the settle waited")
    model_s: float = 0.0  # the step's own requests (the zoom request is in zoom_s)
    zoom_s: float = 0.0  # cropping, encoding and the zoom request
    execute_s: float = 0.0
    settle_s: float = 0.0


class Zoom(BaseModel):
    """Zoom-in re-grounding of a pointing step: the region around the first answer, cut from
    the full-resolution capture, sent (enlarged) with a short grounding prompt."""

    reason: str = Field(description="why the step zoomed in")
    element_info: str = Field("", description="what the grounding prompt asked the model to point at")
    crop_image: tuple[int, int, int, int] = Field(description="left, top, width, height of the crop, image pixels")
    sent: SentInfo = Field(description="the crop as sent to the model")
    first: list[Target] = Field(description="where the first answer pointed, on the whole screenshot")
    attempts: list[Attempt] = Field(default_factory=list, description="the zoom request (at most one)")
    used: bool = Field(False, description="its answer replaced the first one (step.targets hold it)")
    error: str | None = Field(None, description="why its answer was not used (then the first one was)")
    prompt_text: str = ""
    estimated_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    crop_s: float = Field(0.0, description="cutting, enlarging and encoding the crop")
    model_s: float = 0.0


class LoopCheck(BaseModel):
    """A loop the step completed, and how the run responded (in escalating order: tell the
    model, zoom in on its next pointing step, then ask the person or end the run ``stuck``)."""

    kind: Literal["repeat", "cycle"]
    steps: list[int] = Field(description="the steps that make the loop")
    response: Literal["told", "zoom", "asked", "stuck"]
    message: str = ""
    answer: str | None = Field(None, description="what the person said when asked (then the run went on)")


class Step(BaseModel):
    """One perceive-plan-act step (see the module docstring for each field)."""

    step: int
    started_at: float  # Unix time
    screenshot: str  # path relative to the recording folder
    geometry: MonitorGeometry
    sent: SentInfo | None = None
    # the request summary
    prompt_text: str = Field("", description="the request's text, images shown as [image WxH]")
    history_lines: int = Field(0, description="earlier steps given to the model as text lines")
    history_images: int = Field(0, description="of those, how many with a half-size screenshot")
    estimated_tokens: int = 0
    memory_in: list[Any] = Field(default_factory=list, description="the Memory list the model was given")
    # the replies and the accepted action
    attempts: list[Attempt] = Field(default_factory=list)
    action: dict[str, Any] | None = None
    action_text: str = ""
    thought: str = ""
    memory: list[Any] | None = None
    targets: list[Target] = Field(default_factory=list)
    zoom: Zoom | None = None
    screen_changed: bool | None = Field(None, description="whether the action changed the screen (None: not measured)")
    changed_fraction: float | None = Field(None, description="the share of the screen the action changed")
    loop: LoopCheck | None = None
    timings: Timings = Field(default_factory=Timings)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    decision: Literal["skip", "edit", "quit", "refused", "takeover"] | None = Field(
        None,
        description="what the user decided at the approval prompt, or refused: outside the --window scope, "
        "or takeover: a human step, the person had the desktop (None: approved, or not asked)",
    )
    note: str = Field("", description='the same in words, e.g. "skipped by the user"')
    proposed_action: dict[str, Any] | None = Field(
        None, description="the model's own action when the user edited it at the approval prompt"
    )
    user_answer: str | None = Field(None, description="the person's answer to call_user (None: not asked, or none)")
    screenshot_after: str | None = Field(
        None, description="a human step: the screen when the person handed back (screenshot: when they took over)"
    )

    @property
    def by_person(self) -> bool:
        """Recorded from a person (``deskpilot record``): an action that no model reply proposed."""
        return self.action is not None and not self.attempts


class Prices(BaseModel):
    """The price table cost estimates used: USD per million tokens."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0
    source: str = ""  # "preset <provider>" or "override"


class Header(BaseModel):
    schema_version: int = SCHEMA_VERSION
    task: str
    started_at: str  # UTC, ISO 8601
    deskpilot_version: str = __version__
    mode: str = "run"  # run | dry-run | human
    provider: str = ""
    model: str = ""
    protocol: str = ""
    thinking: bool = False
    max_image_tokens: int | None = None  # the image budget per screenshot
    monitor_index: int | None = None  # mss numbering
    monitor: MonitorGeometry | None = None  # set from the first step's capture
    prices: Prices | None = None
    settings: dict[str, Any] = Field(default_factory=dict)  # every public setting, never a key
    window: dict[str, Any] | None = None  # the --window scope: pattern, id, class, title, rect


class Outcome(BaseModel):
    status: OutcomeStatus
    message: str = ""
    answer: str | None = None
    steps: int = 0
    duration_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class Recording(BaseModel):
    """A loaded recording."""

    path: Path
    header: Header
    steps: list[Step]
    outcome: Outcome

    def screenshot_path(self, step: Step, after: bool = False) -> Path:
        """The step's screenshot file (``after``: a human step's second one); a path that
        leads outside the recording is refused."""
        return _inside(self.path, step, after)

    def screenshot_paths(self, step: Step) -> list[Path]:
        """Every screenshot of the step, in the order they were taken."""
        return [self.screenshot_path(step)] + ([self.screenshot_path(step, True)] if step.screenshot_after else [])

    def screenshot(self, step: Step) -> Image.Image:
        with open_image(self.screenshot_path(step), f"screenshot of step {step.step}") as img:
            return img.convert("RGB")


def slugify(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "task"


def make_header(
    task: str, settings: dict[str, Any] | None, mode: str = "run", window: dict[str, Any] | None = None
) -> Header:
    """The header of a new recording, from ``Settings.public()`` (any key-like field is dropped)."""
    public = {k: v for k, v in (settings or {}).items() if k.lower() not in _SECRET_KEYS}
    prices = None
    if "price_in" in public or "price_out" in public:
        prices = Prices(
            input_per_million=public.get("price_in") or 0.0,
            output_per_million=public.get("price_out") or 0.0,
            source=public.get("price_source", ""),
        )
    return Header(
        task=task,
        started_at=datetime.now(timezone.utc).isoformat(),
        mode=mode,
        provider=public.get("provider", ""),
        model=public.get("model", ""),
        protocol=public.get("protocol", ""),
        thinking=bool(public.get("thinking")),
        max_image_tokens=public.get("max_image_tokens"),
        monitor_index=public.get("monitor"),
        prices=prices,
        settings=public,
        window=window,
    )


_WRITE_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def write_error(what: str, exc: OSError, advice: str) -> UsageError:
    """A failed write as a UsageError: what failed, why in words, and what to do."""
    reason = _WRITE_REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
    return UsageError(f"cannot write {what} ({reason}): {advice}")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a whole file or nothing: a kill or a failed write leaves the old file (or none)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(text.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


class JsonlRecorder:
    """Writes one recording folder; a writer thread writes each step's screenshot, then its line.

    ``save_screenshot`` and ``write_step`` only queue the work: they wait only while
    ``QUEUE_STEPS`` steps are queued (a 3840x2160 PNG takes ~0.1 s of CPU time, written while the model
    thinks). A failed write raises ``UsageError`` (exit 2) from the next call, or from
    ``finish``, and keeps what was written before: the recording still loads, with every
    step written until then. After a failure nothing more is written; ``finish`` still
    tries to write the outcome (as ``error`` when the run itself did not fail)."""

    ADVICE = "free some space or choose another folder with --recordings DIR"

    def __init__(
        self,
        root: str | os.PathLike[str],
        task: str,
        settings: dict[str, Any] | None = None,
        mode: str = "run",
        name: str | None = None,
        scrub: Callable[[str], str] | None = None,
        window: dict[str, Any] | None = None,
    ) -> None:
        """``scrub`` is applied to every line and file of JSON written (secret values out);
        ``window`` describes the --window scope for the header."""
        root = Path(root)
        self._scrub = scrub or (lambda text: text)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = name or f"{stamp}-{slugify(task)}"
        try:
            root.mkdir(parents=True, exist_ok=True)
            path = root / base
            n = 1
            while path.exists():
                n += 1
                path = root / f"{base}-{n}"
            (path / "screens").mkdir(parents=True)
            self.path = path
            self.header = make_header(task, settings, mode, window)
            write_text_atomic(path / "header.json", self._json(self.header))
            self._steps = open(path / "steps.jsonl", "ab", buffering=0)
        except OSError as exc:
            raise write_error(f"a recording in {root}", exc, "choose a writable folder with --recordings DIR") from None
        self._size = 0  # bytes of steps.jsonl that hold whole steps
        self._written = 0  # steps on disk
        self._cut = False  # steps.jsonl ends in a partial line that could not be cut off
        self._failure: BaseException | None = None  # set by the writer thread
        self._reported = False  # the failure was raised to the caller
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._room = threading.Semaphore(QUEUE_STEPS)
        self._queued: set[int] = set()  # steps holding a place in the queue until their line is written
        self._writer: threading.Thread | None = None

    def save_screenshot(self, step: int, image: Image.Image | Callable[[], Image.Image], suffix: str = "") -> str:
        """Queue the lossless screenshot of ``step`` (an image, or a function that makes it:
        called in the writer thread) and return its path in the recording. Waits while
        ``QUEUE_STEPS`` steps are queued; raises the failure of an earlier write. ``suffix``
        names a step's second screenshot (``after``: ``step-NNNN-after.png``)."""
        self._raise_failure()
        relative = f"screens/step-{step:04d}{'-' + suffix if suffix else ''}.png"
        self._hold(step)
        self._put(("png", step, relative, image))
        return relative

    def write_step(self, step: Step) -> None:
        """Queue the step's line (written after its screenshot); raises the failure of an earlier write."""
        self._raise_failure()
        try:
            if self.header.monitor is None:  # the monitor is known once something was captured
                header = self.header.model_copy(update={"monitor": step.geometry})
                self._write_json(self.path / "header.json", header)
                self.header = header
        except UsageError:
            self._reported = True
            raise
        line = (self._scrub(step.model_dump_json()) + "\n").encode("utf-8")
        self._hold(step.step)
        self._put(("line", step.step, line))

    def finish(self, outcome: Outcome) -> None:
        """Write everything queued, then outcome.json (its ``steps`` is the number of steps
        written) and close. Raises the first write failure unless it was raised already."""
        if self._writer is not None:
            self._jobs.put(None)
            self._writer.join()
            self._writer = None
        self._steps.close()
        failure = self._failure
        if failure is not None and not self._reported and outcome.status != "error":
            outcome = outcome.model_copy(update={"status": "error", "message": str(failure)})
        if not self._cut:  # otherwise no outcome, so the loader drops the partial line
            try:
                self._write_json(self.path / "outcome.json", outcome.model_copy(update={"steps": self._written}))
            except UsageError:
                pass
        self._raise_failure(again=False)

    def _raise_failure(self, again: bool = True) -> None:
        """Raise the first failure (``again=False``: unless it was raised already)."""
        if self._failure is not None and (again or not self._reported):
            self._reported = True
            raise self._failure

    def _hold(self, step: int) -> None:
        """A place in the queue for ``step`` (kept until its line is written): waits for one."""
        if step not in self._queued:
            self._room.acquire()
            self._queued.add(step)

    def _put(self, job: tuple[Any, ...]) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_jobs, name="deskpilot-recorder", daemon=True)
            self._writer.start()
        self._jobs.put(job)

    def _write_jobs(self) -> None:
        """The writer thread: each job in order; after a failure the rest are dropped."""
        lower_priority()  # the step goes on meanwhile (agent.threads)
        while (job := self._jobs.get()) is not None:
            kind, step = job[0], job[1]
            try:
                if self._failure is None:
                    if kind == "png":
                        self._write_png(step, job[2], job[3])
                    else:
                        self._append(step, job[2])
            except BaseException as exc:  # kept for the loop's thread, which raises it
                if self._failure is None:
                    self._failure = exc
            finally:
                if kind == "line":
                    self._queued.discard(step)
                    self._room.release()

    def _write_png(self, step: int, relative: str, image: Image.Image | Callable[[], Image.Image]) -> None:
        path = self.path / relative
        try:
            save_png(image if isinstance(image, Image.Image) else image(), path)
        except OSError as exc:
            with suppress(OSError):  # a partial file: no step names it, and it takes space
                path.unlink(missing_ok=True)
            raise self._fail(f"the screenshot {path}", exc) from None

    def _append(self, step: int, line: bytes) -> None:
        """One whole line, fsynced; on any failure the file is cut back to its last whole line."""
        try:
            rest = memoryview(line)
            while rest:
                rest = rest[self._steps.write(rest) :]
            os.fsync(self._steps.fileno())
        except BaseException as exc:
            try:
                os.ftruncate(self._steps.fileno(), self._size)
            except OSError:
                self._cut = True
            if isinstance(exc, OSError):
                raise self._fail(f"step {step} to {self.path / 'steps.jsonl'}", exc) from None
            raise
        self._size += len(line)
        self._written += 1

    def _write_json(self, path: Path, model: BaseModel) -> None:
        try:
            write_text_atomic(path, self._json(model))
        except OSError as exc:
            raise self._fail(str(path), exc) from None

    def _json(self, model: BaseModel) -> str:
        return self._scrub(json.dumps(model.model_dump(mode="json"), indent=2, ensure_ascii=False)) + "\n"

    def _fail(self, what: str, exc: OSError) -> UsageError:
        kept = f"{self._written} step{'' if self._written == 1 else 's'}"
        error = write_error(what, exc, f"{self.ADVICE}; the recording so far ({kept}) is kept in {self.path}")
        if self._failure is None:
            self._failure = error
        return error


def load(path: str | os.PathLike[str], check_screens: bool = True) -> Recording:
    """Read a recording folder. Every problem is a UsageError naming the file (and line).

    ``check_screens`` verifies that every step's screenshot exists and decodes.
    """
    root = Path(path)
    if not root.is_dir():
        raise UsageError(f"{root}: no such recording folder")
    header_path = root / "header.json"
    header_data = _read_object(header_path)
    version = header_data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UsageError(
            f"{header_path}: schema version {version!r} is not supported "
            f"(this deskpilot reads version {SCHEMA_VERSION})"
        )
    header = _validate(Header, header_data, header_path)
    outcome_path = root / "outcome.json"
    finished = outcome_path.exists()
    steps_path = root / "steps.jsonl"
    lines = _read_bytes(steps_path).split(b"\n")
    tail = lines.pop()  # what follows the last newline: b"" when the file ends with one
    cut_off = unterminated = None
    if tail.strip():
        if finished:  # a file edited by hand may lack its last newline
            lines.append(tail)
            unterminated = len(lines)
        else:  # killed while writing this step: it never completed
            cut_off = len(lines) + 1
    steps: list[Step] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{steps_path}:{number}"
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise UsageError(f"{where}: the line is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            what = "the last line is truncated" if number == unterminated else "the line is not valid JSON"
            raise UsageError(f"{where}: {what} ({exc.msg})") from None
        step = _validate(Step, data, where)
        if step.step != len(steps) + 1:
            raise UsageError(
                f"{where}: step {step.step} where step {len(steps) + 1} was expected "
                "(steps are numbered 1, 2, 3... in order)"
            )
        steps.append(step)
    if finished:
        outcome = _validate(Outcome, _read_object(outcome_path), outcome_path)
        if outcome.steps != len(steps):
            raise UsageError(
                f"{outcome_path} says the run had {outcome.steps} steps but {steps_path} holds {len(steps)}: "
                f"the recording is damaged; to load the steps it holds as an unfinished run, rename {outcome_path.name}"
            )
    else:
        message = "the run ended before writing its outcome (killed or crashed)"
        if cut_off is not None:
            message += f"; the step being written ({steps_path.name} line {cut_off}) was cut off and dropped"
        outcome = Outcome(
            status="incomplete",
            message=message,
            steps=len(steps),
            prompt_tokens=sum(s.prompt_tokens for s in steps),
            completion_tokens=sum(s.completion_tokens for s in steps),
            cost_usd=round(sum(s.cost_usd for s in steps), 8),
        )
    recording = Recording(path=root, header=header, steps=steps, outcome=outcome)
    for step in steps:
        for screenshot in recording.screenshot_paths(step):
            if check_screens:
                with open_image(screenshot, f"screenshot of step {step.step}") as img:
                    img.verify()  # reads every chunk and checks its CRC, without decompressing
    return recording


def _inside(root: Path, step: Step, after: bool = False) -> Path:
    """``root / step.screenshot`` (``after``: ``step.screenshot_after``), refused unless it
    stays inside ``root`` (symlinks resolved)."""
    relative = (step.screenshot_after or "") if after else step.screenshot
    path = root / relative
    refused = "\x00" in relative or Path(relative).is_absolute() or ".." in Path(relative).parts
    if not refused:
        try:
            refused = not path.resolve().is_relative_to(root.resolve())
        except (OSError, RuntimeError):  # a symlink loop
            refused = True
    if refused:
        raise UsageError(
            f"{root}: the screenshot of step {step.step} is {relative!r}, outside the recording folder; "
            "refused (a recording names its screenshots as screens/step-NNNN.png)"
        )
    return path


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: missing; is {path.parent} a deskpilot recording?") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _read_object(path: Path) -> dict[str, Any]:
    """A JSON object from a UTF-8 file."""
    try:
        data = json.loads(_read_bytes(path).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(data), "a number")
        raise UsageError(f"{path}: holds {kind}, not a JSON object; is {path.parent} a deskpilot recording?")
    return data


def _validate(model: type[BaseModel], data: Any, where: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UsageError(f"{where}: {field}: {first['msg']}") from None
