"""``deskpilot view``: one self-contained HTML page that shows what a recorded run did.

A recording made from a person (``deskpilot record``, header mode ``human``) says so at the
top and on each step ("recorded from a person"), with when the step began and how long the
action took instead of model timings, tokens and replies (there were none).

``render(recording)`` returns the page and ``write_report`` puts it in the recording as
``report.html`` (or in the file ``out``; a read-only recording says so). At the top, the summary (task, outcome, steps, time, tokens, cost, model);
then per step the screenshot with an SVG overlay (the model's box, the grounded click
point, a drag's path, a scroll's direction; for a step that zoomed in, the crop rectangle
(dashed orange) and the first answer's point (hollow blue) beside the zoomed one), the
thought, the action, the timings, tokens, cost, the zoom, whether the screen changed, a
loop and what the run did about it, the rejected replies with their errors, and each raw
reply folded away. A question the model asked the person (call_user) is shown with the
answer; a human step (the person took the desktop over) shows the screen as they took it
and as they handed it back.

Screenshots are embedded as data URLs (the PNG bytes as recorded), so the file opens
offline and can be mailed on its own; ``--link-images`` refers to the files in ``screens/``
instead, for a smaller page. A screenshot path that leads outside the recording is refused. Every piece of text that came from the model, the task or the
recording goes through ``html.escape``: model output is untrusted. The one script on the
page is ours: it marks the body with how many images decoded (used by the tests).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from agent.errors import UsageError
from agent.geometry import box_to_image
from agent.text import printable
from agent.trajectory import Recording, Step, load, write_error, write_text_atomic

STATUS_COLOUR = {
    "done": "#1a7f37",
    "fail": "#cf222e",
    "error": "#cf222e",
    "interrupted": "#9a6700",
    "stuck": "#9a6700",
    "incomplete": "#9a6700",
}
CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       color: var(--fg); background: var(--bg); }
header { background: #fff; border-bottom: 1px solid var(--line); padding: 18px 28px; }
h1 { font-size: 20px; margin: 0 0 4px; word-break: break-word; }
.sub { color: var(--muted); }
.badge { display: inline-block; color: #fff; border-radius: 12px; padding: 1px 10px; font-weight: 600;
         font-size: 13px; vertical-align: middle; }
.stats { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0 0; padding: 0; list-style: none; }
.stats li { background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 6px 12px; }
.stats b { display: block; font-size: 17px; }
.stats span { color: var(--muted); font-size: 12px; }
main { padding: 18px 28px; }
.step { display: grid; grid-template-columns: minmax(0, 3fr) minmax(280px, 2fr); gap: 18px; background: #fff;
        border: 1px solid var(--line); border-radius: 10px; padding: 14px; margin-bottom: 18px; }
.shot { position: relative; display: block; margin: 0; line-height: 0; align-self: start; }
.shot img { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
.shot svg { position: absolute; inset: 0; width: 100%; height: 100%; pointer-events: none; }
h2 { font-size: 16px; margin: 0 0 8px; }
h2 .kind { font-family: ui-monospace, "DejaVu Sans Mono", monospace; background: #ddf4ff; color: #0550ae;
           border-radius: 6px; padding: 1px 7px; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
pre { white-space: pre-wrap; word-break: break-word; background: var(--bg); border: 1px solid var(--line);
      border-radius: 6px; padding: 8px; margin: 4px 0 10px; line-height: 1.4; }
.thought { margin: 0 0 10px; white-space: pre-wrap; word-break: break-word; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
td { padding: 2px 12px 2px 0; vertical-align: top; }
td:first-child { color: var(--muted); }
.err { color: #cf222e; }
.note { color: #9a6700; }
.asked { border-left: 3px solid #9a6700; padding: 2px 0 2px 10px; margin: 0 0 10px; white-space: pre-wrap;
         word-break: break-word; }
.human { background: #fff8c5; }
figcaption { line-height: 1.4; color: var(--muted); font-size: 12px; margin-top: 4px; }
details { margin: 4px 0; }
summary { cursor: pointer; color: var(--accent); }
.legend { color: var(--muted); font-size: 12px; margin-top: 8px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 10px; }
@media (max-width: 900px) { .step { grid-template-columns: 1fr; } }
"""
SCRIPT = """window.addEventListener("load", function () {
  var ok = Array.prototype.filter.call(document.images, function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-images-loaded", String(ok.length));
});"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _m(value: Any) -> str:
    """Model-derived text for the page: control characters made visible, then HTML-escaped."""
    return _e(printable(value))


def _money(usd: float) -> str:
    return f"${usd:.4f}" if usd else "$0"


def render(recording: Recording, link_images: bool = False, page_folder: Path | None = None) -> str:
    """The whole report page as a string. ``link_images`` refers to the screenshots by URLs
    relative to ``page_folder`` (default: the recording folder) instead of embedding them."""
    link_folder = (page_folder or recording.path) if link_images else None
    h, o = recording.header, recording.outcome
    colour = STATUS_COLOUR.get(o.status, "#9a6700")
    started = h.started_at
    try:
        started = datetime.fromisoformat(h.started_at).strftime("%Y-%m-%d %H:%M:%S %Z")
    except ValueError:
        pass
    monitor = (
        f"{h.monitor.width}x{h.monitor.height} at ({h.monitor.left}, {h.monitor.top}), scale {h.monitor.scale:g}"
        if h.monitor
        else "unknown"
    )
    prices = (
        f"{_money(h.prices.input_per_million)} / {_money(h.prices.output_per_million)} per M tokens "
        f"({_e(h.prices.source)})"
        if h.prices
        else "none"
    )
    retries = sum(max(0, len(s.attempts) - 1) for s in recording.steps)
    human = h.mode == "human"
    stats: list[tuple[Any, str]] = [(o.steps, "steps"), (f"{o.duration_s:.1f} s", "time")]
    if not human or o.prompt_tokens + o.completion_tokens:  # a person's recording asked the model only to --describe
        stats += [
            (
                f"{o.prompt_tokens + o.completion_tokens:,}",
                f"tokens ({o.prompt_tokens:,} in, {o.completion_tokens:,} out)",
            ),
            (_money(o.cost_usd), "estimated cost"),
        ]
    if not human:
        stats.append((retries, "retried replies"))
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>deskpilot: {_m(h.task)}</title><style>{CSS}</style></head><body>",
        "<header>",
        f'<h1>{_m(h.task)} <span class="badge" style="background:{colour}">{_e(o.status)}</span></h1>',
        f'<div class="sub">{_m(o.message)}</div>',
    ]
    if o.answer:
        parts.append(f"<div>Answer: <b>{_m(o.answer)}</b></div>")
    parts.append(
        '<ul class="stats">' + "".join(f"<li><b>{_e(v)}</b><span>{_e(k)}</span></li>" for v, k in stats) + "</ul>"
    )
    if human:
        model = f" · element descriptions by {_e(h.provider)} · {_e(h.model)}" if h.model else ""
        about = f"recorded from a person{model}"
    else:
        about = (
            f"{_e(h.provider)} · {_e(h.model)} · protocol {_e(h.protocol)} · thinking "
            f"{'on' if h.thinking else 'off'} · {_e(h.mode)}"
        )
    parts.append(
        f'<div class="sub" style="margin-top:10px">{about} · monitor {_e(monitor)}'
        + ("" if human and not h.model else f" · prices {prices}")
        + f" · started {_e(started)} · deskpilot {_e(h.deskpilot_version)} · schema v{h.schema_version}</div>"
    )
    parts.append("</header><main>")
    first = recording.steps[0].started_at if recording.steps else 0.0
    for step in recording.steps:
        parts.append(_step(recording, step, link_folder, first))
    if not recording.steps:
        parts.append("<p>No step was recorded.</p>")
    parts.append(f"</main><script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)


def _image_src(recording: Recording, step: Step, link_images: Path | None, after: bool = False) -> str:
    """The screenshot (``after``: a human step's second one) as a data URL, or as a URL
    relative to the page's folder ``link_images``."""
    path = recording.screenshot_path(step, after)
    if link_images is not None:
        try:
            return _e(quote(Path(os.path.relpath(path.resolve(), link_images.resolve())).as_posix()))
        except ValueError:  # on another drive (Windows): no relative path
            return _e(path.resolve().as_uri())
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: screenshot of step {step.step} cannot be read ({exc.strerror or exc})") from None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _overlay(step: Step) -> str:
    """SVG in image pixels: the model's box (dashed), each grounded point, a drag's path."""
    w, h = step.geometry.width, step.geometry.height
    r = max(w, h) / 70  # marker size relative to the screen
    stroke = max(2.5, max(w, h) / 400)
    kind = (step.action or {}).get("kind", "")
    shapes = []
    if step.zoom is not None:  # the crop the model was sent again
        cx, cy, cw, ch = step.zoom.crop_image
        shapes.append(
            f'<rect x="{cx}" y="{cy}" width="{cw}" height="{ch}" fill="none" stroke="#bc4c00" '
            f'stroke-width="{stroke:.1f}" stroke-dasharray="{stroke * 2:.1f}"/>'
        )
    for target in step.targets:
        box = target.box_model
        if len(box) == 4:
            x1, y1, x2, y2 = box_to_image(box, (w, h), target.crop_image)
            shapes.append(
                f'<rect x="{x1:.1f}" y="{y1:.1f}" width="{x2 - x1:.1f}" height="{y2 - y1:.1f}" '
                f'fill="rgba(9,105,218,0.12)" stroke="#0969da" stroke-width="{stroke:.1f}" '
                f'stroke-dasharray="{stroke * 3:.1f}"/>'
            )
    if len(step.targets) == 2:
        (ax, ay), (bx, by) = step.targets[0].point_image, step.targets[1].point_image
        shapes.append(
            f'<line x1="{ax}" y1="{ay}" x2="{bx}" y2="{by}" stroke="#cf222e" '
            f'stroke-width="{stroke * 1.5:.1f}" marker-end="url(#arrow-{step.step})"/>'
        )
    for target in step.targets:
        x, y = target.point_image
        cross = f"M{x - r * 1.7:.1f} {y}H{x + r * 1.7:.1f}M{x} {y - r * 1.7:.1f}V{y + r * 1.7:.1f}"
        for colour, width in (("#fff", stroke * 2.2), ("#cf222e", stroke)):  # a white halo, then red
            shapes.append(
                f'<circle cx="{x}" cy="{y}" r="{r:.1f}" fill="none" stroke="{colour}" '
                f'stroke-width="{width:.1f}"/><path d="{cross}" stroke="{colour}" '
                f'stroke-width="{width:.1f}"/>'
            )
        shapes.append(f'<circle cx="{x}" cy="{y}" r="{stroke:.1f}" fill="#cf222e"/>')
    if step.zoom is not None:  # drawn last, over the red marker: the first answer and the way to the zoomed one
        for first, target in zip(step.zoom.first, step.targets):
            (fx, fy), (x, y) = first.point_image, target.point_image
            shapes.append(
                f'<line x1="{fx}" y1="{fy}" x2="{x}" y2="{y}" stroke="#0969da" stroke-width="{stroke * 0.6:.1f}"/>'
            )
            for colour, width in (("#fff", stroke * 2), ("#0969da", stroke)):
                shapes.append(
                    f'<circle cx="{fx}" cy="{fy}" r="{r * 0.45:.1f}" fill="none" stroke="{colour}" '
                    f'stroke-width="{width:.1f}"/>'
                )
    if kind == "scroll" and step.targets:
        x, y = step.targets[0].point_image
        down = (step.action or {}).get("direction") == "down"
        tip = y + r * 4 if down else y - r * 4
        shapes.append(
            f'<line x1="{x}" y1="{y}" x2="{x}" y2="{tip:.1f}" stroke="#cf222e" '
            f'stroke-width="{stroke * 1.5:.1f}" marker-end="url(#arrow-{step.step})"/>'
        )
    if not shapes:
        return ""
    marker = (
        f'<defs><marker id="arrow-{step.step}" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="5" '
        f'markerHeight="5" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" fill="#cf222e"/></marker></defs>'
    )
    return (
        f'<svg class="overlay" viewBox="0 0 {w} {h}" preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg" '
        f'aria-hidden="true">{marker}{"".join(shapes)}</svg>'
    )


def _step(recording: Recording, step: Step, link_images: Path | None, first_started_at: float) -> str:
    human = step.decision == "takeover"
    kind = "the person acted" if human else (step.action or {}).get("kind", "no action")
    t = step.timings
    where = "".join(
        f"<tr><td>target</td><td><code>{_e(tg.box_model)}</code> ‰{' of the crop' if tg.crop_image else ''} → image "
        f"<code>({tg.point_image[0]}, {tg.point_image[1]})</code> → screen "
        f"<code>({tg.point_screen[0]}, {tg.point_screen[1]})</code></td></tr>"
        for tg in step.targets
    )
    zoom = step.zoom
    if zoom is not None:
        cx, cy, cw, ch = zoom.crop_image
        first = "; ".join(
            f"<code>{_e(tg.box_model)}</code> ‰ → image <code>{tg.point_image}</code>" for tg in zoom.first
        )
        used = "its answer used" if zoom.used else f'<span class="err">its answer not used: {_m(zoom.error)}</span>'
        where += (
            f"<tr><td>zoom</td><td>{_e(zoom.reason)}: crop {cw}x{ch} at ({cx}, {cy}) sent as "
            f"{zoom.sent.width}x{zoom.sent.height}, asking for <i>{_m(zoom.element_info)}</i>; first answer "
            f"{first}; {used}; {zoom.prompt_tokens + zoom.completion_tokens:,} tokens, {zoom.crop_s + zoom.model_s:.2f} s"
            "</td></tr>"
        )
    if step.screen_changed is not None:
        where += (
            f"<tr><td>progress</td><td>{'the screen changed' if step.screen_changed else '<b>the screen did not change</b>'}"
            f" ({(step.changed_fraction or 0) * 100:.2f} % of it)</td></tr>"
        )
    sent = (
        f"{step.sent.width}x{step.sent.height} {_e(step.sent.encoding)}, {step.sent.tokens:,} image tokens"
        if step.sent
        else "-"
    )
    tokens = (
        f"<tr><td>tokens</td><td>{step.prompt_tokens:,} in · {step.completion_tokens:,} out · "
        f"{_money(step.cost_usd)}</td></tr>"
    )
    if step.by_person:
        rows = [
            where,
            f"<tr><td>timing</td><td>began at +{step.started_at - first_started_at:.2f} s · took "
            f"{t.execute_s:.2f} s</td></tr>",
        ]
        if step.prompt_tokens + step.completion_tokens:  # --describe asked the model about the target
            rows.append(tokens)
    else:
        rows = [
            where,
            f"<tr><td>timings</td><td>capture {t.capture_s:.2f} s · model {t.model_s:.2f} s"
            + (f" · zoom {t.zoom_s:.2f} s" if t.zoom_s else "")
            + f" · execute {t.execute_s:.2f} s · settle {t.settle_s:.2f} s</td></tr>",
            tokens,
            f"<tr><td>sent</td><td>{sent}; history {step.history_lines} steps, {step.history_images} images</td></tr>",
        ]
    body = [f'<h2>Step {step.step} <span class="kind">{_e(kind)}</span></h2>']
    if step.by_person:
        body.append('<p class="sub person">recorded from a person</p>')
    if step.thought:
        body.append(f'<p class="thought">{_m(step.thought)}</p>')
    if step.action_text:
        body.append(f"<pre>{_e(step.action_text)}</pre>")
    if kind == "call_user":
        question = (step.action or {}).get("question")
        answer = "(no answer)" if step.user_answer is None else step.user_answer
        body.append(f'<p class="asked">The model asked: {_m(question)}<br>The person answered: {_m(answer)}</p>')
    if step.note:
        body.append(f'<p class="note">{_m(step.note)}</p>')
    if step.error:
        body.append(f'<p class="err">{_m(step.error)}</p>')
    if step.loop is not None:
        body.append(
            f'<p class="note">Loop ({_e(step.loop.kind)}): {_m(step.loop.message)}; {_m(step.loop.response)}</p>'
        )
    body.append("<table>" + "".join(rows) + "</table>")
    if step.memory:
        body.append(
            f"<details><summary>memory ({len(step.memory)})</summary><pre>"
            f"{_e(json.dumps(step.memory, ensure_ascii=False, indent=1))}</pre></details>"
        )
    for number, attempt in enumerate(step.attempts, start=1):
        status = f'<span class="err">rejected: {_e(attempt.error_type)}</span>' if attempt.error else "accepted"
        retried = f", {len(attempt.transport_retries)} HTTP retries" if attempt.transport_retries else ""
        raw = attempt.raw
        shown = {k: raw[k] for k in ("content", "reasoning", "tool_calls", "finish_reason") if raw.get(k)}
        body.append(
            f"<details{' open' if attempt.error else ''}><summary>reply {number}: {status} "
            f"({attempt.latency_s:.2f} s{retried})</summary>"
            + (f'<p class="err">{_m(attempt.error)}</p>' if attempt.error else "")
            + "".join(f'<p class="sub">{_e(n)}</p>' for n in attempt.transport_retries)
            + f"<pre>{_e(json.dumps(shown, ensure_ascii=False, indent=1))}</pre></details>"
        )
    if zoom is not None:
        for attempt in zoom.attempts:
            status = f'<span class="err">rejected: {_e(attempt.error_type)}</span>' if attempt.error else "accepted"
            shown = {k: attempt.raw[k] for k in ("content", "reasoning", "tool_calls") if attempt.raw.get(k)}
            body.append(
                f"<details><summary>zoom reply: {status} ({attempt.latency_s:.2f} s)</summary>"
                f"<pre>{_e(json.dumps(shown, ensure_ascii=False, indent=1))}</pre></details>"
            )
    alt = f"step {step.step} screenshot"
    figure = (
        f'<figure class="shot"><img src="{_image_src(recording, step, link_images)}" alt="{_e(alt)}" '
        f'width="{step.geometry.width}" height="{step.geometry.height}">{_overlay(step)}</figure>'
    )
    if step.targets:
        figure = (
            f'<div>{figure}<div class="legend"><i style="background:#cf222e"></i>where it acted'
            + (
                '<i style="background:#0969da"></i>the model\'s box'
                if any(len(tg.box_model) == 4 for tg in step.targets)
                else ""
            )
            + (
                '<i style="background:#bc4c00"></i>the zoomed-in crop<i style="background:#0969da"></i>the first answer'
                if zoom is not None
                else ""
            )
            + f" · screenshot {step.geometry.width}x{step.geometry.height}</div></div>"
        )
    if human and step.screenshot_after:
        after = _image_src(recording, step, link_images, after=True)
        figure = (
            f"<div>{figure}<figcaption>when the person took the desktop over</figcaption>"
            f'<figure class="shot"><img src="{after}" alt="{_e(f"step {step.step} screenshot after")}" '
            f'width="{step.geometry.width}" height="{step.geometry.height}"></figure>'
            "<figcaption>when they handed it back</figcaption></div>"
        )
    css = "step human" if human else "step"
    return f'<section class="{css}" id="step-{step.step}">{figure}<div>{"".join(body)}</div></section>'


def write_report(path: str | Path, link_images: bool = False, out: str | Path | None = None) -> Path:
    """Write the report to ``out`` (default: report.html in the recording) and return its path.

    A write that fails (read-only folder, full disk) is a UsageError saying where else to write."""
    recording = load(path)
    target = Path(out) if out is not None else recording.path / "report.html"
    page = render(recording, link_images, target.parent)
    if out is None:
        advice = f"write it elsewhere with: deskpilot view {shlex.quote(str(recording.path))} --out FILE"
    else:
        advice = "choose another file with --out FILE"
    try:
        write_text_atomic(target, page)
    except OSError as exc:
        raise write_error(f"the report {target}", exc, advice) from None
    return target
