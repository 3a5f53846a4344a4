"""The bench's table: ``Row`` (one measured figure beside its baseline) and ``format_table``,
which turns a ``run_bench`` result into the text ``deskpilot bench`` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.bench.common import SETTLE_BASELINE_S


@dataclass
class Row:
    """One line of the table."""

    id: str
    metric: str
    case: str
    unit: str
    ours: float | None
    baseline: float | None
    better: str = "lower"  # lower | higher: which way is good (for the ratio)
    target: str = ""
    met: bool | None = None
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if not self.ours or not self.baseline:
            return None
        return self.baseline / self.ours if self.better == "lower" else self.ours / self.baseline


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("tokens", "steps/s") or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def format_table(result: dict[str, Any]) -> str:
    """The table of ``result["rows"]``, the per-stage profiles under it and what each baseline is."""
    meta = result["meta"]
    rows = result["rows"]
    width = 1 + max([len("metric"), *(len(row["metric"]) for row in rows)])  # columns never run together
    case = 1 + max([len("case"), *(len(row["case"]) for row in rows)])
    target = 1 + max([len("target"), *(len(row["target"]) for row in rows)])
    lines = [
        f"deskpilot bench: {meta['mode']}, median of {meta['repeat']}, encoding {meta['encoding']}, "
        f"Python {meta['python']}, {meta['cpus']} CPUs"
        + (f", load average {meta['load_average'][0]:.2f}" if meta.get("load_average") else ""),
        f"{'metric':<{width}}{'case':<{case}}{'ours':>9}{'baseline':>11}{'ratio':>8}  {'target':<{target}}met",
    ]
    previous = None
    for row in rows:
        metric = row["metric"] if row["metric"] != previous else ""
        previous = row["metric"]
        ratio = f"{row['ratio']:.1f}x" if row["ratio"] else "-"
        met = {True: "yes", False: "NO", None: ""}[row["met"]]
        lines.append(
            f"{metric:<{width}}{row['case']:<{case}}{_fmt(row['ours'], row['unit']):>9}"
            f"{_fmt(row['baseline'], row['unit']):>11}{ratio:>8}  {row['target']:<{target}}{met}"
            + (f"  ({row['note']})" if row["note"] else "")
        )
    lines.append("")
    for row in result["rows"]:
        if row["id"].startswith("perception_ms/"):
            st = dict(row["detail"]["stages_ms"])
            lines.append(
                f"profile {row['case']:>9} (ms): capture {st['capture']:.1f} | convert {st['convert']:.1f} | resize "
                f"{st['resize']:.1f} | encode {st['encode']:.1f} | base64 {st['base64']:.1f} | "
                f"body {st['body']:.1f} (tool schemas {st['tool_schemas']:.1f} of it); stages sum to "
                f"{sum(st[k] for k in ('capture', 'convert', 'resize', 'encode', 'base64', 'body')):.1f}; sent "
                f"{row['detail']['sent_size'][0]}x{row['detail']['sent_size'][1]}, "
                f"{row['detail']['sent_bytes'] / 1024:.0f} KB; half shot {st['half_shot']:.1f} "
                "(made while the model thinks)"
            )
        if row["id"] == "whole_step_ms":
            ours, base = row["detail"]["ours_parts_ms"], row["detail"]["baseline_parts_ms"]
            lines.append(
                f"whole step (ms): ours capture {ours['capture_s']:.1f} + prepare {ours['prepare_s']:.1f}, waiting "
                f"for the recorder {ours['record_wait_s']:.1f} (its lossless PNG alone: {ours['recorder_png']:.1f}, "
                f"Pillow's {ours['recorder_png_pillow']:.1f}, written in its own thread), model round trip {ours['model_s']:.1f}; "
                f"baseline {base['capture_s'] + base['prepare_s']:.1f}, {base['model_s']:.1f}"
            )
        if row["id"].startswith("live_step_ms/"):
            parts = row["detail"]["parts_ms"]
            lines.append(
                f"live step {row['case'].split(',')[0]} (ms): execute {parts['execute_s']:.1f}, settle "
                f"{parts['settle_s']:.1f}, capture {parts['capture_s']:.1f} + prepare {parts['prepare_s']:.1f}, "
                f"waiting for the recorder {parts['record_wait_s']:.1f}; frames from the settle "
                f"{row['detail']['settled_frames']}, prepared ahead {row['detail']['prepared_ahead']}"
            )
    lines += [
        "baselines: perception = full-size capture (ImageGrab when live) + full-size PNG (level 6) + base64 + body;",
        "  perception cold / after a settle, settle poll = deskpilot's previous path (agent/bench/previous.py);",
        f"  settle = fixed {SETTLE_BASELINE_S:.1f} s sleep; tokens = full-size screenshots, history kept full-size;",
        "  replay = re-running the loop on the recorded screens (replay simulate), first 50 steps;",
        "  memory = RSS before the run; whole step = same loop sending full-size PNG (level 6);",
        "  progress check = comparing two full-resolution captures; zoom = the same fake model with --zoom off.",
        "ratio = how many times better ours is than the baseline.",
    ]
    return "\n".join(lines)
