"""``deskpilot bench``: what everything around the model costs, each figure beside a baseline.

Every figure is a median over ``--repeat`` runs, measured in the same process as its
baseline (interleaved where both are timed):

* perception per step: what stands between a capture and the request going out
  (capture, resize, encode, base64 and the JSON request body with 4 history shots) at
  1280x800, 1920x1080, 2560x1440 and 3840x2160; the half-size history shot of the step is
  made in the background while the model thinks (as the loop does) and profiled apart,
  against a full-size capture (PIL ImageGrab when live) saved as a full-size PNG at
  Pillow's default level; a per-stage profile of ours is printed under the table;
* perception from a capture to the model-ready image at each size, on a cold capture and
  after a settle (the settled frame, prepared while the settle waited), and the cost of one
  settle poll, each against deskpilot's previous path (``previous``);
* settle after a click on a static window (live only) against a fixed 2.0 s sleep;
* input tokens per step (``agent.protocol.build_body``'s estimate) with 0 and 4 history
  shots at each size, against full-size screenshots kept in full;
* replay check throughput over a generated 500-step recording (ScriptedPlanner,
  ImageScreen, DryRunExecutor, JsonlRecorder), against re-running those steps through
  the loop (``replay.simulate``), and resident memory across the 500-step run;
* whole-step overhead without the model: ``run_episode`` against a FakeModelServer that
  answers at once, against the same loop sending full-size PNGs; with ``--live``, a real
  step outside the model at 2560x1440 and 3840x2160 (``deskpilot run`` clicking, the
  settle, the recorder);
* the progress check per step (two of the settle's thumbnails compared) at 1920x1080,
  2560x1440 and 3840x2160, against comparing two full-resolution captures;
* zoom-in re-grounding on generated 2560x1440 and 3840x2160 desktops with one 12-20 px
  target each (``--zoom-trials`` of them): a fake model with limited precision clicks,
  with ``--zoom auto`` against ``--zoom off``: hit rate, input tokens and time per step.
* streaming (``stream_rows``): with a fake model streaming like a real endpoint, the time
  from the request to the first input event and the whole step, streaming against waiting
  for the whole reply, with the same actions.

``--check`` makes the command exit 1 when a row misses its target, naming the row (for CI).

Without ``--live`` the screens are generated desktops (wallpaper, icons, a code editor,
a file list, a browser page with a photo, a dialog, a task bar) held in memory as mss
delivers them; with ``--live`` each size is a private Xvfb (+ openbox) showing the same
kind of desktop as real Tk windows, captured with mss. ``--json PATH`` writes every row.

The entry points: ``run_bench(**OPTIONS)`` measures and returns the result (a dict, JSON-
ready), ``format_table(result)`` renders it, ``add_arguments(parser)`` adds the command's
flags (their ``dest`` names are the keys of ``OPTIONS``, plus ``json``). Nothing in the
package prints. Where the rest lives: ``scene`` (the generated and the live desktop;
``desktop_app`` is the live one's Tk program), ``perception`` (perception, settle poll and
token rows), ``previous`` (the previous path, the baseline of the big-screen rows),
``settle_rows``, ``replay_rows``, ``loop_rows`` (the whole step), ``recovery_rows`` (zoom and
the progress check, with ``imprecise``: the fake model and its screens), ``table`` (``Row`` and the
table), ``common`` (what the rows share) and ``run`` (``run_bench``). The command that prints it all
is ``agent.commands.bench``.
"""

from __future__ import annotations

import argparse
from typing import Any

from agent.argtypes import positive_int
from agent.bench.common import (
    DEFAULT_ENCODING,
    DEFAULT_REPEAT,
    DEFAULT_REPLAY_STEPS,
    DEFAULT_STEPS,
    DEFAULT_ZOOM_TRIALS,
)
from agent.bench.run import run_bench
from agent.bench.table import Row, format_table

__all__ = ["OPTIONS", "Row", "add_arguments", "format_table", "run_bench"]

# run_bench's options as the command gives them, with their defaults.
OPTIONS: dict[str, Any] = {
    "repeat": DEFAULT_REPEAT,
    "replay_steps": DEFAULT_REPLAY_STEPS,
    "steps": DEFAULT_STEPS,
    "encoding": DEFAULT_ENCODING,
    "live": False,
    "profile": False,
    "zoom_trials": DEFAULT_ZOOM_TRIALS,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``deskpilot bench`` flags: one per key of ``OPTIONS``, and ``--json PATH``."""
    parser.add_argument(
        "--live",
        action="store_true",
        help="capture real Xvfb desktops (one per size) instead of generated screens; adds the settle measurement",
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=DEFAULT_REPEAT,
        metavar="N",
        help=f"runs per median (default: {DEFAULT_REPEAT})",
    )
    parser.add_argument(
        "--replay-steps",
        type=positive_int,
        default=DEFAULT_REPLAY_STEPS,
        metavar="N",
        help=f"steps in the simulated recording (default: {DEFAULT_REPLAY_STEPS})",
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=DEFAULT_STEPS,
        metavar="N",
        help=f"loop steps timed for the whole-step overhead (default: {DEFAULT_STEPS})",
    )
    parser.add_argument(
        "--encoding",
        default=DEFAULT_ENCODING,
        metavar="ENC",
        help=f"png[:LEVEL] or jpeg[:QUALITY] for our side (default: {DEFAULT_ENCODING})",
    )
    parser.add_argument(
        "--zoom-trials",
        type=positive_int,
        default=DEFAULT_ZOOM_TRIALS,
        metavar="N",
        help=f"small targets per screen size for the zoom rows (default: {DEFAULT_ZOOM_TRIALS})",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a row misses its target, naming the row (for a CI job)"
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile of perception at 1920x1080")
