"""``deskpilot bench`` smoke test (tiny repeat counts, no display, nothing timed), the
package's entry points, its generated and live desktops, and the image-budget rules it measures."""

from __future__ import annotations

import argparse
import base64
import inspect
import io
import json

import pytest
from PIL import Image

from agent.bench import OPTIONS, add_arguments, run_bench
from agent.bench.scene import MemoryScreen, generate_screen, live_desktop
from agent.capture import Screenshot
from agent.cli import main
from agent.config import parse_encoding
from agent.errors import UsageError
from agent.geometry import MonitorGeometry, image_tokens
from agent.image import encode_image, prepare_for_model, sent_size

SIZES = ("1280x800", "1920x1080", "2560x1440", "3840x2160")
ROW_IDS = [
    *(f"perception_ms/{size}" for size in SIZES),
    *(f"perception_cold_ms/{size}" for size in SIZES),
    *(f"perception_settled_ms/{size}" for size in SIZES),
    *(f"settle_poll_ms/{size}" for size in SIZES),
    "settle_ms/static",
    *(f"tokens/{size}/h{shots}" for size in SIZES for shots in (0, 4)),
    "replay_check_steps_per_s",
    "memory_peak_mb",
    "memory_growth_mb",
    "whole_step_ms",
    "progress_check_ms/1920x1080",
    "progress_check_ms/2560x1440",
    "progress_check_ms/3840x2160",
    "zoom_hit_rate/2560x1440",
    "zoom_tokens/2560x1440",
    "zoom_step_ms/2560x1440",
    "zoom_hit_rate/3840x2160",
    "zoom_tokens/3840x2160",
    "zoom_step_ms/3840x2160",
    "stream_first_input_ms",
    "stream_step_ms",
]


def test_bench_smoke_writes_every_row(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        ["bench", "--repeat", "1", "--replay-steps", "6", "--steps", "1", "--zoom-trials", "2", "--json", str(out)]
    )
    assert code == 0
    result = json.loads(out.read_text())
    rows = {row["id"]: row for row in result["rows"]}
    assert [row["id"] for row in result["rows"]] == ROW_IDS
    for name, row in rows.items():
        if name == "settle_ms/static":
            assert row["ours"] is None and "live only" in row["note"]  # no display here
        elif name.startswith("perception_settled_ms/"):  # may be ~0: the settle prepared the frame ahead
            assert row["ours"] >= 0 and row["baseline"] > 0, name
        elif name.startswith("zoom_hit_rate/"):  # two targets: a hit rate, each way, of 0, 50 or 100 %
            assert row["ours"] in (0, 50, 100) and row["baseline"] in (0, 50, 100) and row["detail"]["trials"] == 2
        elif name == "memory_peak_mb":
            assert row["ours"] > 0 and row["baseline"] is None  # the true peak; no pretend alternative
        elif name != "memory_growth_mb":
            assert row["ours"] > 0 and row["baseline"] > 0, name
    first = rows["stream_first_input_ms"]
    assert first["detail"]["same_actions"] and first["ours"] <= 0.75 * first["baseline"], first
    for size in SIZES:  # each beside the previous path, the sent size as that size's rules say
        cold = rows[f"perception_cold_ms/{size}"]["detail"]
        assert cold["sent_size"] == list(sent_size(tuple(map(int, size.split("x")))))
    assert rows["perception_cold_ms/3840x2160"]["detail"]["previous_sent_size"] == [1932, 1064]
    assert rows["settle_poll_ms/3840x2160"]["detail"]["thumbnail_size"] == [480, 270]
    assert rows["replay_check_steps_per_s"]["detail"]["differences"] == 0
    parts = rows["whole_step_ms"]["detail"]["ours_parts_ms"]  # the recorder's PNG, Pillow's beside it
    assert parts["recorder_png"] > 0 and parts["recorder_png_pillow"] > 0
    assert set(rows["perception_ms/1920x1080"]["detail"]["stages_ms"]) >= {"capture", "resize", "encode", "base64"}
    h0, h4 = rows["tokens/1920x1080/h0"], rows["tokens/1920x1080/h4"]
    assert h4["ours"] - h0["ours"] >= 4 * 646 and h4["baseline"] - h0["baseline"] >= 4 * 2691
    assert rows["tokens/1920x1080/h4"]["target"] and rows["perception_ms/1920x1080"]["target"]
    printed = capsys.readouterr().out
    for metric in (
        "perception per step",
        "perception, cold capture",
        "perception after a settle",
        "settle poll",
        "settle after a click",
        "input tokens per step",
        "replay check",
        "resident memory",
        "whole step",
        "profile 1920x1080",
        "progress check per step",
        "click hits a 12-20 px target",
    ):
        assert metric in printed


def test_bench_check_exits_1_naming_the_row_that_missed(monkeypatch, capsys):
    import agent.commands.bench as bench_command

    rows = [
        {"id": "ok_row", "metric": "m", "case": "c", "ours": 1.0, "target": "<= 2", "met": True},
        {
            "id": "stream_first_input_ms",
            "metric": "first input",
            "case": "c",
            "ours": 9.0,
            "target": ">= 25%",
            "met": False,
        },
    ]
    result = {"meta": {}, "rows": rows, "profiles": {}}
    monkeypatch.setattr(bench_command, "run_bench", lambda **kw: result)
    monkeypatch.setattr(bench_command, "format_table", lambda result: "table")
    assert main(["bench", "--check"]) == 1
    err = capsys.readouterr().err
    assert "missed target: stream_first_input_ms" in err and "ok_row" not in err
    assert main(["bench"]) == 0  # without --check a miss is only shown


def test_bench_rejects_an_unknown_encoding(capsys):
    assert main(["bench", "--encoding", "webp", "--repeat", "1"]) == 2
    assert "unknown image encoding" in capsys.readouterr().err


def test_add_arguments_gives_run_bench_its_options_and_defaults():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = parser.parse_args([])
    assert {name: getattr(defaults, name) for name in OPTIONS} == OPTIONS and defaults.json is None
    parameters = inspect.signature(run_bench).parameters
    assert {name: parameters[name].default for name in OPTIONS} == OPTIONS
    args = parser.parse_args(
        ["--live", "--repeat", "3", "--replay-steps", "9", "--encoding", "png", "--json", "x", "--zoom-trials", "5"]
    )
    assert (args.live, args.repeat, args.replay_steps, args.encoding, args.json) == (True, 3, 9, "png", "x")
    assert args.zoom_trials == 5
    with pytest.raises(SystemExit):
        parser.parse_args(["--repeat", "0"])


def test_memory_screen_captures_the_generated_desktop_as_painted():
    painted = generate_screen((1280, 800))
    shot = MemoryScreen(painted).capture()
    assert shot.image.tobytes() == painted.tobytes() and shot.monitor.width == 1280
    assert len(painted.getcolors(maxcolors=1 << 20) or ()) > 10_000  # a photo, text, windows: not flat fills


def _window_names(display: str) -> set[str]:
    from Xlib.display import Display

    connection = Display(display)
    names: set[str] = set()

    def walk(window) -> None:
        name = window.get_wm_name()
        if name:
            names.add(name.decode() if isinstance(name, bytes) else name)
        for child in window.query_tree().children:
            walk(child)

    try:
        walk(connection.screen().root)
    finally:
        connection.close()
    return names


@pytest.mark.live
def test_live_desktop_runs_the_desktop_app_with_every_window():
    from agent.xvfb import have_xvfb

    if not have_xvfb():
        pytest.skip("Xvfb is not installed")
    pytest.importorskip("tkinter")
    from agent.capture import MssScreen

    with live_desktop((1280, 800)) as display:
        names = _window_names(display)
        screen = MssScreen(1)
        try:
            image = screen.capture().image
        finally:
            screen.close()
    windows = {"wallpaper", "panel", "Preferences", "News - Browser", "Files - /home/user/projects", "loop.py - Editor"}
    assert windows <= names
    assert image.size == (1280, 800) and len(image.getcolors(maxcolors=1 << 20) or ()) > 10_000


# --- the image budget ---------------------------------------------------------------------


def shot(size) -> Screenshot:
    return Screenshot(Image.new("RGB", size, "white"), MonitorGeometry(0, 0, *size))


@pytest.mark.parametrize(
    "text,parsed", [("png", ("png", 1)), ("png:6", ("png", 6)), ("jpeg", ("jpeg", 90)), ("jpeg:75", ("jpeg", 75))]
)
def test_encodings(text, parsed):
    assert parse_encoding(text) == parsed


@pytest.mark.parametrize("text", ["webp", "png:10", "jpeg:0", "jpeg:x", "jpeg:100"])
def test_bad_encodings_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_encoding(text)


def test_jpeg_data_url_decodes_at_the_sent_size():
    sent = encode_image(Image.new("RGB", (1920, 1080), "navy"), (1932, 1064), "jpeg:90")
    assert sent.data_url.startswith("data:image/jpeg;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(sent.data_url.split(",", 1)[1])))
    assert decoded.size == (1932, 1064) and decoded.format == "JPEG" and sent.n_bytes > 0


@pytest.mark.parametrize("size", [(2560, 1440), (2880, 1800), (5120, 2880)])
def test_downscaled_captures_and_their_history_shots_stay_on_the_28_grid(size):
    full, half = prepare_for_model(shot(size).image), prepare_for_model(shot(size).image, half=True)
    for sent in (full, half):
        assert sent.size[0] % 28 == 0 and sent.size[1] % 28 == 0
        assert sent.tokens == image_tokens(sent.size) == (sent.size[0] // 28) * (sent.size[1] // 28)
    assert abs(half.size[0] * 2 - full.size[0]) <= 56 and half.tokens <= full.tokens / 4 + 1


@pytest.mark.parametrize("size,sent", [((3840, 2160), (1920, 1080)), ((5760, 3240), (1920, 1080))])
def test_an_exact_fraction_within_budget_is_sent_as_a_block_average(size, sent):
    """4K at the default budget: 1920x1080 (2,691 tokens), each pixel the mean of a 2x2 block (3x3 at 5760)."""
    k, column = size[0] // sent[0], sent[0] // 2
    image = Image.new("RGB", size, "white")
    image.paste("black", (0, 0, column * k + 1, size[1]))  # the blocks of one column: 1 of k columns black
    full, half = prepare_for_model(image), prepare_for_model(image, half=True)
    assert full.size == sent and half.size == (sent[0] // 2, sent[1] // 2) and full.tokens <= 2700
    decoded = Image.open(io.BytesIO(base64.b64decode(full.data_url.split(",", 1)[1]))).convert("L")
    assert abs(decoded.getpixel((column, sent[1] // 2)) - 255 * (k - 1) / k) <= 12  # a box average, no ringing


@pytest.mark.parametrize("size", [(1920, 1080), (1366, 768), (1280, 800)])
def test_native_captures_are_sent_unsnapped_and_halved_exactly(size):
    full, half = prepare_for_model(shot(size).image), prepare_for_model(shot(size).image, half=True)
    assert full.size == size and half.size == (size[0] // 2, size[1] // 2)
