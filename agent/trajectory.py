"""Recordings: the trajectory schema (v1), the recorder that writes it, and the loader.

A recording is a folder ``recordings/<timestamp>-<slug>/`` holding:

* ``header.json``: schema version, task, start time, deskpilot version, the public
  settings (provider, model, protocol, thinking, monitor, image budget; never a key);
* ``steps.jsonl``: one ``Step`` per line, appended and flushed as each step ends, so a
  run killed at any point leaves every completed step readable;
* ``screens/step-NNNN.png``: the full capture of each step, lossless;
* ``outcome.json``: how the run ended. Missing after a crash: it loads as "incomplete".

``load`` reads a recording back with errors that name the file and line.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from agent import __version__
from agent.errors import UsageError

SCHEMA_VERSION = 1
OutcomeStatus = Literal["done", "fail", "max_steps", "max_time", "max_cost", "interrupted", "error", "incomplete"]


class Geometry(BaseModel):
    left: int
    top: int
    width: int
    height: int
    scale: float = 1.0


class SentInfo(BaseModel):
    width: int
    height: int
    encoding: str
    bytes: int
    tokens: int


class Attempt(BaseModel):
    """One request to the model within a step, and what came of it."""

    raw: dict[str, Any]  # RawReply as sent back by the server
    error: str | None = None  # the model error shown back on the next try
    error_type: str | None = None
    latency_s: float = 0.0
    transport_retries: list[str] = Field(default_factory=list)
    protocol: str = ""


class Target(BaseModel):
    """Where a pointing action lands, in all three coordinate spaces."""

    box_model: list[int]
    point_image: list[int]
    point_screen: list[int]


class Timings(BaseModel):
    capture_s: float = 0.0
    model_s: float = 0.0
    execute_s: float = 0.0
    settle_s: float = 0.0


class Step(BaseModel):
    step: int
    started_at: float
    screenshot: str  # path relative to the recording folder
    geometry: Geometry
    sent: SentInfo | None = None
    prompt_text: str = ""  # the request's text, images shown as [image WxH]
    history_lines: int = 0
    history_images: int = 0
    estimated_tokens: int = 0
    memory_in: list[Any] = Field(default_factory=list)
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


class Header(BaseModel):
    schema_version: int = SCHEMA_VERSION
    task: str
    started_at: str
    deskpilot_version: str = __version__
    settings: dict[str, Any] = Field(default_factory=dict)
    mode: str = "run"  # run | dry-run | replay


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


class JsonlRecorder:
    """Writes one recording folder, flushing each step as it ends."""

    def __init__(self, root: str | os.PathLike[str], task: str, settings: dict[str, Any] | None = None,
                 mode: str = "run", name: str | None = None) -> None:
        root = Path(root)
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
            header = Header(task=task, started_at=datetime.now(timezone.utc).isoformat(),
                            settings=settings or {}, mode=mode)
            _write_json(path / "header.json", header.model_dump(mode="json"))
            self._steps = open(path / "steps.jsonl", "a", encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"cannot write recordings to {root} ({exc.strerror or exc}): "
                "choose a writable folder with --recordings DIR"
            ) from None
        self.started = time.monotonic()

    def save_screenshot(self, step: int, image: Image.Image) -> str:
        relative = f"screens/step-{step:04d}.png"
        image.save(self.path / relative, format="PNG", compress_level=1)
        return relative

    def write_step(self, step: Step) -> None:
        self._steps.write(step.model_dump_json() + "\n")
        self._steps.flush()
        os.fsync(self._steps.fileno())

    def finish(self, outcome: Outcome) -> None:
        self._steps.close()
        _write_json(self.path / "outcome.json", outcome.model_dump(mode="json"))


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load(path: str | os.PathLike[str]) -> Recording:
    """Read a recording folder. Every problem is a UsageError naming the file (and line)."""
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
    steps_path = root / "steps.jsonl"
    if not steps_path.exists():
        raise UsageError(f"{steps_path}: missing; is {root} a deskpilot recording?")
    steps: list[Step] = []
    lines = steps_path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            where = "the last line is truncated" if number == len(lines) else "the line is not valid JSON"
            raise UsageError(f"{steps_path}:{number}: {where} ({exc.msg})") from None
        steps.append(_validate(Step, data, f"{steps_path}:{number}"))
    outcome_path = root / "outcome.json"
    if outcome_path.exists():
        outcome = _validate(Outcome, _read_json(outcome_path), outcome_path)
    else:
        outcome = Outcome(status="incomplete", message="the run ended before writing its outcome",
                          steps=len(steps))
    return Recording(path=root, header=header, steps=steps, outcome=outcome)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: missing; is {path.parent} a deskpilot recording?") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def _validate(model: type[BaseModel], data: Any, where: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"{where}: {field}: {first['msg']}") from None
