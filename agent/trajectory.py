"""Recordings: the trajectory schema (v1), the recorder that writes it, and the loader.

A recording is a folder ``recordings/<timestamp>-<slug>/`` holding:

* ``header.json`` (``Header``): schema version, task, start time (UTC, ISO 8601), deskpilot
  version, mode (run / dry-run), provider, model, protocol, thinking, the monitor's geometry
  and scale (filled in at the first step), the image budget, the price table used for cost
  estimates, and ``settings``: every public setting of the run. Never an API key.
* ``steps.jsonl``: one ``Step`` per line, appended, flushed and fsynced as each step ends,
  so a run killed at any point (SIGKILL included) leaves every completed step readable.
* ``screens/step-NNNN.png``: the full capture of each step (image space, lossless).
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
* ``timings`` (capture / model / execute / settle, seconds), ``prompt_tokens``,
  ``completion_tokens``, ``cost_usd`` (summed over the attempts, from the header's price
  table) and ``error`` (why the step produced no action, or what stopped it).

``load`` reads a recording back. Every problem is a ``UsageError`` (exit 2) naming the file
and, for ``steps.jsonl``, the line: a missing file, a line that is not JSON, an unknown
schema version, a field of the wrong shape, a screenshot that is missing or does not
decode. One exception: in a run that never wrote its outcome (killed), a cut-off last line
is the step that was being written; it is dropped and the outcome says so.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from agent import __version__
from agent.errors import UsageError
from agent.geometry import MonitorGeometry, Target

SCHEMA_VERSION = 1
OutcomeStatus = Literal["done", "fail", "max_steps", "max_time", "max_cost", "interrupted", "error", "incomplete"]
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


class Timings(BaseModel):
    capture_s: float = 0.0
    model_s: float = 0.0
    execute_s: float = 0.0
    settle_s: float = 0.0


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
    timings: Timings = Field(default_factory=Timings)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    decision: Literal["skip", "edit", "quit", "refused"] | None = Field(
        None,
        description="what the user decided at the approval prompt, or refused: outside the --window scope "
        "(None: approved, or not asked)",
    )
    note: str = Field("", description='the same in words, e.g. "skipped by the user"')
    proposed_action: dict[str, Any] | None = Field(
        None, description="the model's own action when the user edited it at the approval prompt"
    )


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
    mode: str = "run"  # run | dry-run
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

    def screenshot(self, step: Step) -> Image.Image:
        path = self.path / step.screenshot
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except FileNotFoundError:
            raise UsageError(f"{path}: screenshot of step {step.step} is missing") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: screenshot of step {step.step} does not decode ({exc})") from None


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


class JsonlRecorder:
    """Writes one recording folder, flushing each step as it ends."""

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
            self._write_json(path / "header.json", self.header)
            self._steps = open(path / "steps.jsonl", "a", encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"cannot write recordings to {root} ({exc.strerror or exc}): "
                "choose a writable folder with --recordings DIR"
            ) from None
        self.started = time.monotonic()
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def save_screenshot(self, step: int, image: Image.Image) -> str:
        """Start writing the lossless screenshot in the background (a 1080p PNG takes
        ~90 ms, done while the model thinks); ``write_step`` waits for it, so a step line
        never names a file that is not complete on disk."""
        relative = f"screens/step-{step:04d}.png"
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deskpilot-png")
        self._pending.append(self._writer.submit(image.save, self.path / relative, format="PNG", compress_level=1))
        return relative

    def _wait_for_screenshots(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def write_step(self, step: Step) -> None:
        self._wait_for_screenshots()
        if self.header.monitor is None:  # the monitor is known once something was captured
            self.header.monitor = step.geometry
            self._write_json(self.path / "header.json", self.header)
        self._steps.write(self._scrub(step.model_dump_json()) + "\n")
        self._steps.flush()
        os.fsync(self._steps.fileno())

    def finish(self, outcome: Outcome) -> None:
        self._wait_for_screenshots()
        if self._writer is not None:
            self._writer.shutdown()
        if not self._steps.closed:
            self._steps.close()
        self._write_json(self.path / "outcome.json", outcome)

    def _write_json(self, path: Path, model: BaseModel) -> None:
        _write_text(path, self._scrub(json.dumps(model.model_dump(mode="json"), indent=2, ensure_ascii=False)) + "\n")


def _write_text(path: Path, text: str) -> None:
    """Write atomically: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load(path: str | os.PathLike[str], check_screens: bool = True) -> Recording:
    """Read a recording folder. Every problem is a UsageError naming the file (and line).

    ``check_screens`` verifies that every step's screenshot exists and decodes.
    """
    root = Path(path)
    if not root.is_dir():
        raise UsageError(f"{root}: no such recording folder")
    header_path = root / "header.json"
    header_data = _read_json(header_path)
    version = header_data.get("schema_version") if isinstance(header_data, dict) else None
    if version != SCHEMA_VERSION:
        raise UsageError(
            f"{header_path}: schema version {version!r} is not supported "
            f"(this deskpilot reads version {SCHEMA_VERSION})"
        )
    header = _validate(Header, header_data, header_path)
    outcome_path = root / "outcome.json"
    finished = outcome_path.exists()
    steps_path = root / "steps.jsonl"
    lines = _read_text(steps_path).splitlines()
    steps: list[Step] = []
    cut_off = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = number == len(lines)
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            if last and not finished:  # killed while writing this step: it never completed
                cut_off = number
                break
            where = "the last line is truncated" if last else "the line is not valid JSON"
            raise UsageError(f"{steps_path}:{number}: {where} ({exc.msg})") from None
        steps.append(_validate(Step, data, f"{steps_path}:{number}"))
    if finished:
        outcome = _validate(Outcome, _read_json(outcome_path), outcome_path)
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
    if check_screens:
        for step in steps:
            _check_screenshot(root, step)
    return recording


def _check_screenshot(root: Path, step: Step) -> None:
    path = root / step.screenshot
    if not step.screenshot or not path.is_file():
        raise UsageError(f"{path}: screenshot of step {step.step} is missing")
    try:
        with Image.open(path) as img:
            img.verify()  # reads every chunk and checks its CRC, without decompressing
    except Exception as exc:  # PIL raises many kinds for bad data
        raise UsageError(f"{path}: screenshot of step {step.step} does not decode ({exc})") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: missing; is {path.parent} a deskpilot recording?") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def _validate(model: type[BaseModel], data: Any, where: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UsageError(f"{where}: {field}: {first['msg']}") from None
