"""Coping with an imperfect model: zoom-in re-grounding, progress checks and loop escape,
with fake models that point imprecisely, repeat a click that does nothing, or go round in a cycle."""

from __future__ import annotations

import io
import json
import re

import pytest
from PIL import Image, ImageDraw

from actions.executor import DryRunExecutor
from actions.schema import build_action
from agent.bench.imprecise import ELEMENT, ImpreciseModel, small_target_screen
from agent.capture import Screenshot, thumbnail
from agent.commands.common import Console
from agent.commands.run import ask_when_stuck
from agent.config import Settings
from agent.geometry import MonitorGeometry
from agent.loop import Limits, Recovery, run_episode
from agent.planner import ScriptedPlanner
from agent.progress import changed_since, find_loop, frame_change, is_change, same_action
from agent.protocol import build_message
from agent.replay.offline import check, simulate
from agent.report import render
from agent.trajectory import JsonlRecorder, Step, load
from agent.zoom import crop_for, retried_unchanged, zoom_reason

SETTINGS = Settings.resolve("vllm")


class Desk:
    """A scripted desktop: ``capture()`` serves the screens in order (the last repeats) and,
    as a settle hook, it keeps the screen the action led to (the next one) as ``last_probe``."""

    def __init__(self, *images: Image.Image) -> None:
        self.images = list(images)
        self.served = 0
        self.last_probe: Image.Image | None = None

    def capture(self) -> Screenshot:
        image = self.images[min(self.served, len(self.images) - 1)]
        self.served += 1
        return Screenshot(image, MonitorGeometry(0, 0, *image.size))

    def __call__(self) -> float:  # the settle hook
        self.last_probe = thumbnail(self.images[min(self.served, len(self.images) - 1)])
        return 0.0


def plain(color: str, size=(1280, 800), mark: tuple[int, int] | None = None) -> Image.Image:
    image = Image.new("RGB", size, color)
    if mark:
        ImageDraw.Draw(image).rectangle((mark[0], mark[1], mark[0] + 200, mark[1] + 120), fill="black")
    return image


def episode(planner, screen, tmp_path, recovery=None, settle=None, max_steps=12):
    recorder = JsonlRecorder(tmp_path / "rec", "t", SETTINGS.public())
    executor = DryRunExecutor()
    result = run_episode(
        "click the small green square",
        screen=screen,
        planner=planner,
        executor=executor,
        settings=SETTINGS,
        limits=Limits(max_steps=max_steps),
        recorder=recorder,
        settle=settle,
        recovery=recovery,
    )
    return result, executor, load(recorder.path)


def inside(rect, point) -> bool:
    return rect[0] <= point[0] < rect[2] and rect[1] <= point[1] < rect[3]


# --- zoom ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_zoom_hits_a_small_target_the_imprecise_first_answer_misses(seed, tmp_path):
    image, rect = small_target_screen((2560, 1440), seed)
    hits = {}
    for mode in ("off", "auto"):
        model = ImpreciseModel(k=10)  # 1 % of the image it sees: 26 px on the whole screen, 3 px in the crop
        planner = ScriptedPlanner([model.decide_request] * 40)
        result, executor, rec = episode(planner, Desk(image), tmp_path / mode, Recovery(zoom=mode))
        assert result.outcome.status == "done"
        clicked = rec.steps[0].targets[0].point_image
        hits[mode] = inside(rect, clicked)
        if mode == "off":
            assert rec.steps[0].zoom is None and model.zoom_requests == 0
            continue
        zoom = rec.steps[0].zoom
        assert zoom is not None and zoom.used and zoom.error is None and model.zoom_requests == 1
        assert "shrunk" in zoom.reason or "smaller" in zoom.reason
        left, top, width, height = zoom.crop_image
        assert (width, height) == (256, 256) and (zoom.sent.width, zoom.sent.height) == (784, 784)
        assert (
            left <= zoom.first[0].point_image[0] < left + width and top <= zoom.first[0].point_image[1] < top + height
        )
        assert rec.steps[0].targets[0].crop_image == zoom.crop_image and len(zoom.attempts) == 1
        assert executor.performed[0].points_screen == (clicked,)  # the zoomed point is the one clicked
        zoom_request = planner.calls[1]
        assert zoom_request.grounding is not None and zoom_request.grounding.element == ELEMENT
        assert zoom_request.history == [] and zoom_request.screenshot.size == (784, 784)
        built = build_message(zoom_request, SETTINGS, use_tools=True)
        assert f"Point at this element again, as exactly as you can: {ELEMENT}" in built.prompt_text
        assert (
            "256 x 256 screen pixels around the point you chose for left_click, enlarged 3.1 times" in built.prompt_text
        )
        assert built.prompt_text.endswith("[image 784x784]") and "# History" not in built.prompt_text
        assert built.estimated_tokens > 784 and rec.steps[0].timings.zoom_s > 0
    assert hits == {"off": False, "auto": True}


def test_an_unusable_zoom_answer_keeps_the_first_answer(tmp_path):
    image, _ = small_target_screen((2560, 1440), 1)
    first = "<|begin_of_box|>left_click(start_box='[400,300]', element_info='Save')<|end_of_box|>"
    planner = ScriptedPlanner([first, "It is not here.\n<|begin_of_box|>FAIL()<|end_of_box|>", "DONE()"])
    result, executor, rec = episode(planner, Desk(image), tmp_path)
    zoom = rec.steps[0].zoom
    assert zoom is not None and not zoom.used and "NoPoint" in (zoom.error or "")
    assert rec.steps[0].targets == zoom.first and executor.performed[0].points_screen == ((1024, 432),)
    assert zoom.attempts[0].error_type == "NoPoint" and result.outcome.status == "done"
    planner.assert_complete()


def test_no_zoom_on_a_native_screenshot_or_a_large_box(tmp_path):
    replies = [
        "<|begin_of_box|>left_click(start_box='[400,300]', element_info='Save')<|end_of_box|>",
        "<|begin_of_box|>left_click(start_box='[400,300,500,400]', element_info='photo')<|end_of_box|>",
        "DONE()",
    ]
    planner = ScriptedPlanner(replies)
    _, _, rec = episode(planner, Desk(plain("white", (1920, 1080))), tmp_path)
    assert [s.zoom for s in rec.steps] == [None, None, None]
    planner.assert_complete()


def act(text: str):
    return build_action(*text)


@pytest.mark.parametrize(
    "mode,action,size_image,size_sent,retried,forced,want",
    [
        ("auto", ("left_click", {"start_box": "[500,500]"}), (1920, 1080), (1920, 1080), False, None, None),
        ("auto", ("left_click", {"start_box": "[500,500]"}), (2560, 1440), (1932, 1064), False, None, "smaller"),
        ("auto", ("left_click", {"start_box": "[500,500]"}), (3840, 2160), (1932, 1064), False, None, "smaller"),
        (
            "auto",
            ("left_click", {"start_box": "[500,500,510,520]"}),
            (1920, 1080),
            (1920, 1080),
            False,
            None,
            "small box",
        ),
        ("auto", ("hover", {"start_box": "[500,500,510,520]"}), (1920, 1080), (1920, 1080), False, None, "small box"),
        ("auto", ("left_click", {"start_box": "[100,100,300,160]"}), (3840, 2160), (1932, 1064), False, None, None),
        ("auto", ("left_click", {"start_box": "[500,500]"}), (1920, 1080), (1920, 1080), True, None, "last try"),
        ("auto", ("left_click", {"start_box": "[500,500]"}), (1920, 1080), (1920, 1080), False, "a loop", "a loop"),
        (
            "always",
            ("right_click", {"start_box": "[500,500,900,900]"}),
            (1280, 800),
            (1280, 800),
            False,
            None,
            "always",
        ),
        ("off", ("left_click", {"start_box": "[500,500,505,505]"}), (3840, 2160), (1932, 1064), True, "a loop", None),
        (
            "always",
            ("left_drag", {"start_box": "[1,1]", "end_box": "[9,9]"}),
            (3840, 2160),
            (1932, 1064),
            False,
            None,
            None,
        ),
        (
            "always",
            ("scroll", {"start_box": "[1,1]", "direction": "down"}),
            (3840, 2160),
            (1932, 1064),
            False,
            None,
            None,
        ),
        ("always", ("type", {"content": "x"}), (3840, 2160), (1932, 1064), False, None, None),
    ],
)
def test_zoom_reason(mode, action, size_image, size_sent, retried, forced, want):
    reason = zoom_reason(mode, act(action), size_image, size_sent, retried, forced)
    assert (reason is None) if want is None else (want in reason)


def test_the_crop_is_a_tenth_of_the_screen_with_a_floor():
    assert crop_for((1280, 720), (2560, 1440)) == (1152, 592, 256, 256)
    assert crop_for((1920, 1080), (3840, 2160)) == (1728, 888, 384, 384)
    assert crop_for((10, 10), (1280, 800)) == (0, 0, 224, 224)


# --- progress and loops ----------------------------------------------------------------------

CLICK = "Click Save.\n<|begin_of_box|>left_click(start_box='[500,500]', element_info='Save')<|end_of_box|>"


def test_a_repeated_click_that_changes_nothing_ends_stuck(tmp_path):
    desk = Desk(plain("white"))
    planner = ScriptedPlanner([CLICK] * 40)
    result, executor, rec = episode(planner, desk, tmp_path, Recovery(zoom="off"), settle=desk, max_steps=30)
    assert result.outcome.status == "stuck" and len(rec.steps) == 5 and len(executor.performed) == 5
    assert "changed nothing 3 times" in result.outcome.message and rec.outcome.status == "stuck"
    assert [s.screen_changed for s in rec.steps] == [False] * 5
    assert [s.loop.response if s.loop else None for s in rec.steps] == [None, None, "told", "told", "stuck"]
    assert rec.steps[2].loop.kind == "repeat" and rec.steps[2].loop.steps == [1, 2, 3]
    # the model reads it in its history, in the trained format
    step_1 = planner.calls[1].history[0]
    assert step_1.step == 1 and step_1.result == "the screen did not change"
    prompt = build_message(planner.calls[1], SETTINGS, use_tools=False).prompt_text
    assert "Action: left_click(start_box='[500,500]', element_info='Save') Result: the screen did not change" in prompt
    told = planner.calls[3].history[-1].result
    assert told.startswith("the screen did not change; No progress: the same action") and "FAIL" in told


def test_the_loop_escalation_zooms_before_giving_up(tmp_path):
    image, _ = small_target_screen((1920, 1080), 5)  # native size: auto would not zoom a point
    desk = Desk(image)
    planner = ScriptedPlanner([CLICK] * 40)
    recovery = Recovery(zoom="auto")
    result, _, rec = episode(planner, desk, tmp_path, recovery, settle=desk, max_steps=30)
    assert result.outcome.status == "stuck"
    reasons = [s.zoom.reason if s.zoom else None for s in rec.steps]
    # step 2 retries the same element on an unchanged screen: zoom; the loop escalation asks for it too
    assert reasons[0] is None and all(r is not None for r in reasons[1:])
    assert rec.steps[3].loop.response == "zoom" and "a loop" in reasons[4]


def test_the_person_can_be_asked_instead_of_ending_stuck(tmp_path):
    desk = Desk(plain("white"))
    asked = []

    def on_stuck(step: Step, message: str) -> str | None:
        asked.append((step.step, message))
        return "the Save button is greyed out; use ctrl+s"

    def model(request):
        if any("ctrl+s" in h.result for h in request.history):
            return "DONE()"
        return CLICK

    planner = ScriptedPlanner([model] * 40)
    result, _, rec = episode(planner, desk, tmp_path, Recovery(zoom="off", on_stuck=on_stuck), settle=desk)
    assert result.outcome.status == "done" and [a[0] for a in asked] == [5]
    assert rec.steps[4].loop.response == "asked"
    assert rec.steps[4].loop.answer == "the Save button is greyed out; use ctrl+s"
    assert "The user says: 'the Save button is greyed out; use ctrl+s'" in planner.calls[5].history[-1].result
    assert check(rec) == [] and simulate(rec) == []  # the recorded answer is given again


def test_an_a_b_a_b_cycle_ends_stuck(tmp_path):
    closed, opened = plain("white", mark=(100, 100)), plain("white", mark=(700, 400))
    desk = Desk(*[closed, opened] * 8)
    menu = "<|begin_of_box|>left_click(start_box='[100,100]', element_info='File')<|end_of_box|>"
    close = "<|begin_of_box|>key(keys='escape')<|end_of_box|>"
    planner = ScriptedPlanner([menu, close] * 8)
    result, _, rec = episode(planner, desk, tmp_path, Recovery(zoom="off"), settle=desk, max_steps=30)
    assert result.outcome.status == "stuck" and len(rec.steps) == 6
    assert all(s.screen_changed for s in rec.steps)
    assert [s.loop.response if s.loop else None for s in rec.steps] == [None, None, None, "told", "told", "stuck"]
    assert rec.steps[3].loop.kind == "cycle" and rec.steps[3].loop.steps == [1, 2, 3, 4]
    assert "went back and forth" in planner.calls[4].history[-1].result


def test_alternating_actions_that_make_progress_are_not_a_loop(tmp_path):
    screens = [plain("white", mark=(40 * i, 30 * i)) for i in range(8)]  # every step shows a new screen
    desk = Desk(*screens)
    typing = "<|begin_of_box|>type(content='a')<|end_of_box|>"
    tab = "<|begin_of_box|>key(keys='tab')<|end_of_box|>"
    planner = ScriptedPlanner([typing, tab, typing, tab, typing, tab, "DONE()"])
    result, _, rec = episode(planner, desk, tmp_path, settle=desk)
    assert result.outcome.status == "done" and all(s.loop is None for s in rec.steps)


def test_no_progress_is_claimed_without_a_settle_probe(tmp_path):
    planner = ScriptedPlanner([CLICK] * 6 + ["DONE()"])
    result, _, rec = episode(planner, Desk(plain("white")), tmp_path, Recovery(zoom="off"))
    assert result.outcome.status == "done" and {s.screen_changed for s in rec.steps} == {None}


def step(number: int, action: dict, point_image, changed: bool | None = False) -> Step:
    from agent.geometry import Target

    targets = [Target((0, 0), point_image, point_image)] if point_image else []
    return Step(
        step=number,
        started_at=0.0,
        screenshot="",
        geometry=MonitorGeometry(0, 0, 1000, 1000),
        action=action,
        targets=targets,
        screen_changed=changed,
    )


CLICK_AT = {"kind": "left_click", "start_box": [1, 1], "element_info": "Save"}


def test_same_action_allows_a_little_wobble_only():
    a = step(1, CLICK_AT, (500, 500))
    assert same_action(a, step(2, {**CLICK_AT, "start_box": [2, 2], "element_info": "save"}, (515, 490)))
    assert not same_action(a, step(2, CLICK_AT, (530, 500)))
    assert not same_action(a, step(2, {**CLICK_AT, "kind": "right_click"}, (500, 500)))
    typed = {"kind": "type", "content": "a"}
    assert same_action(step(1, typed, None), step(2, typed, None))
    assert not same_action(step(1, typed, None), step(2, {"kind": "type", "content": "b"}, None))


def test_find_loop_needs_three_unchanged_repeats():
    same = lambda a, b: True
    assert find_loop([step(i, CLICK_AT, (500, 500)) for i in (1, 2)], same) is None
    assert find_loop([step(i, CLICK_AT, (500, 500)) for i in (1, 2, 3)], same).kind == "repeat"
    changed = [step(1, CLICK_AT, (500, 500)), step(2, CLICK_AT, (500, 500), True), step(3, CLICK_AT, (500, 500))]
    assert find_loop(changed, same) is None
    unmeasured = [step(i, CLICK_AT, (500, 500), None) for i in (1, 2, 3)]
    assert find_loop(unmeasured, same) is None


def test_retried_unchanged_knows_the_same_element():
    previous = step(1, CLICK_AT, (500, 500))
    assert retried_unchanged(
        previous, act(("left_click", {"start_box": "[900,900]", "element_info": " SAVE "})), (900, 900)
    )
    assert retried_unchanged(previous, act(("left_click", {"start_box": "[505,505]"})), (505, 505))
    assert not retried_unchanged(previous, act(("left_click", {"start_box": "[900,900]"})), (900, 900))
    changed = step(1, CLICK_AT, (500, 500), True)
    assert not retried_unchanged(changed, act(("left_click", {"start_box": "[500,500]"})), (500, 500))


class FrameDesk(Desk):
    """A Desk whose settle also keeps the quiet frame at full resolution, as AdaptiveSettle does."""

    def __call__(self) -> float:
        super().__call__()
        image = self.images[min(self.served, len(self.images) - 1)]
        self.frame = Screenshot(image, MonitorGeometry(0, 0, *image.size))
        return 0.0

    def take_frame(self) -> Screenshot | None:
        return self.frame


def field(size=(3840, 2160), text: str = "", caret: bool = False) -> Image.Image:
    """A form with one text field, ``text`` typed into it (13 px text), a caret shown or not."""
    image = Image.new("RGB", size, (220, 220, 220))
    draw = ImageDraw.Draw(image)
    draw.rectangle((600, 400, 1000, 424), fill="white", outline=(120, 120, 120))
    if text:
        draw.text((606, 406), text, fill="black")
    if caret:
        draw.rectangle((606, 404, 607, 420), fill="black")
    return image


def test_a_typed_word_between_the_thumbnails_samples_is_a_change_and_a_caret_is_not(tmp_path):
    empty, typed = field(), field(text="hello")
    assert not is_change(changed_since(thumbnail(empty), thumbnail(typed)))  # the samples all but miss it at 4K
    typing = "<|begin_of_box|>type(content='hello')<|end_of_box|>"
    desk = FrameDesk(empty, typed)
    planner = ScriptedPlanner([typing, "DONE()"])
    _, _, rec = episode(planner, desk, tmp_path / "typed", settle=desk)
    assert rec.steps[0].screen_changed is True and rec.steps[0].changed_fraction > 0
    assert planner.calls[1].history[0].result == ""  # the model is not told its typing did nothing
    blink = FrameDesk(field(), field(caret=True))
    planner = ScriptedPlanner([typing, "DONE()"])
    _, _, rec = episode(planner, blink, tmp_path / "caret", settle=blink)
    assert rec.steps[0].screen_changed is False and rec.steps[0].changed_fraction == 0.0
    assert planner.calls[1].history[0].result == "the screen did not change"


@pytest.mark.parametrize("size", [(1280, 800), (2560, 1440), (3840, 2160)])
def test_frame_change_on_mss_pixels_and_on_images(size):
    from agent.image import Bgrx

    def shot(image: Image.Image, raw: bool) -> Screenshot:
        if not raw:
            return Screenshot(image, MonitorGeometry(0, 0, *image.size))
        red, green, blue = image.split()
        bgrx = Image.merge("RGBX", (blue, green, red, Image.new("L", image.size, 0))).tobytes()
        return Screenshot(None, MonitorGeometry(0, 0, *image.size), Bgrx(bgrx, image.size))

    for raw in (False, True):
        empty = shot(field(size), raw)
        assert frame_change(empty, shot(field(size), raw)) == 0.0
        assert frame_change(empty, shot(field(size, caret=True), raw)) == 0.0
        word = frame_change(empty, shot(field(size, text="hello"), raw))
        assert 0 < word < 0.001
        assert frame_change(empty, shot(field(size, text="hello", caret=True), raw)) > word  # more changed
        assert frame_change(empty, shot(field((size[0], size[1] - 2)), raw)) == 1.0


# --- replay --------------------------------------------------------------------------------


def test_replay_check_regrounds_through_the_recorded_crop(tmp_path):
    image, _ = small_target_screen((2560, 1440), 2)
    planner = ScriptedPlanner([ImpreciseModel(k=10).decide_request] * 40)
    _, _, rec = episode(planner, Desk(image), tmp_path, Recovery(zoom="auto"))
    assert rec.steps[0].zoom is not None and rec.steps[0].zoom.used
    assert check(rec) == [] and simulate(rec) == []
    # the zoom reply now points elsewhere in the crop: check says which step and where
    lines = (rec.path / "steps.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    content = first["zoom"]["attempts"][0]["raw"]["content"]
    first["zoom"]["attempts"][0]["raw"]["content"] = re.sub(r"\[\d+,\d+\]", "[100,900]", content)
    (rec.path / "steps.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    differences = check(load(rec.path))
    assert len(differences) == 1 and differences[0].step == 1
    crop_left, crop_top = rec.steps[0].zoom.crop_image[:2]
    assert f"now [100, 900] = image ({crop_left + 26}, {crop_top + 230})" in str(differences[0])


def test_replay_simulate_reproduces_the_loop_escalation(tmp_path):
    image, _ = small_target_screen((1920, 1080), 5)
    desk = Desk(image)
    planner = ScriptedPlanner([CLICK] * 40)
    result, _, rec = episode(planner, desk, tmp_path, Recovery(zoom="auto"), settle=desk, max_steps=30)
    assert result.outcome.status == "stuck" and sum(s.zoom is not None for s in rec.steps) == 4
    assert check(rec) == [] and simulate(rec) == []


# --- report --------------------------------------------------------------------------------


def test_the_report_draws_the_crop_both_points_and_the_progress(tmp_path):
    image, _ = small_target_screen((2560, 1440), 2)
    evil = "<img src=x onerror=alert(1)>"
    first = f"<|begin_of_box|>left_click(start_box='[400,300]', element_info='{evil}')<|end_of_box|>"
    zoomed = "<|begin_of_box|>left_click(start_box='[600,400]')<|end_of_box|>"
    desk = Desk(image)
    planner = ScriptedPlanner([first, zoomed, first, zoomed, first, zoomed])
    result, _, rec = episode(planner, desk, tmp_path, Recovery(zoom="auto"), settle=desk, max_steps=3)
    page = render(rec)
    zoom = rec.steps[0].zoom
    left, top, width, height = zoom.crop_image
    assert f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#bc4c00"' in page
    fx, fy = zoom.first[0].point_image
    assert f'<circle cx="{fx}" cy="{fy}"' in page and 'stroke="#0969da"' in page
    x, y = rec.steps[0].targets[0].point_image
    assert (x, y) == (left + 154, top + 102) and f'<circle cx="{x}" cy="{y}"' in page
    assert f"crop {width}x{height} at ({left}, {top}) sent as 784x784" in page and "‰ of the crop" in page
    assert "<b>the screen did not change</b> (0.00 % of it)" in page
    assert evil not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "zoom reply: accepted" in page and "the zoomed-in crop" in page


@pytest.mark.parametrize("typed,want", [("use ctrl+s\n", "use ctrl+s"), ("\n", None), ("", None)])
def test_the_cli_asks_the_person_when_stuck(typed, want):
    out = io.StringIO()
    on_stuck = ask_when_stuck(Console(out=out, inp=io.StringIO(typed)))
    assert on_stuck(step(5, CLICK_AT, (500, 500)), "the same action changed nothing 3 times") == want
    assert out.getvalue().startswith("deskpilot: stuck at step 5: the same action changed nothing 3 times. What")


def test_zoom_is_an_option_of_the_api_and_the_cli(capsys):
    from agent.api import Options
    from agent.cli import main
    from agent.errors import UsageError

    assert Options().zoom == "auto" and Options.make(zoom="off").zoom == "off"
    with pytest.raises(UsageError, match="bad option zoom"):
        Options.make(zoom="sideways")
    with pytest.raises(SystemExit) as exited:
        main(["run", "t", "--zoom", "sideways"])
    assert exited.value.code == 2 and "invalid choice: 'sideways'" in capsys.readouterr().err
