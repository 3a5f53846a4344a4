"""Table tests for the three coordinate spaces and the image-token arithmetic."""

import pytest

from agent.errors import CoordinateOutOfRange
from agent.geometry import (
    MonitorGeometry,
    box_center,
    fit_to_tokens,
    ground,
    image_to_model,
    image_to_screen,
    image_tokens,
    model_to_image,
    screen_to_image,
)

# name, monitor, model-space point or box, expected image pixel, expected screen point
GROUNDING = [
    ("1080p origin, centre", MonitorGeometry(0, 0, 1920, 1080), (500, 500), (960, 540), (960, 540)),
    ("1080p top-left", MonitorGeometry(0, 0, 1920, 1080), (0, 0), (0, 0), (0, 0)),
    ("1080p 999 is the last pixel", MonitorGeometry(0, 0, 1920, 1080), (999, 999), (1918, 1079), (1918, 1079)),
    ("1000 clamps inside", MonitorGeometry(0, 0, 1920, 1080), (1000, 1000), (1919, 1079), (1919, 1079)),
    (
        "Retina 2:1 (2880x1800 capture of 1440x900 points)",
        MonitorGeometry(0, 0, 2880, 1800, 2.0),
        (250, 750),
        (720, 1350),
        (360, 675),
    ),
    (
        "Windows 150% (physical, DPI aware: scale 1)",
        MonitorGeometry(0, 0, 2880, 1620, 1.0),
        (500, 500),
        (1440, 810),
        (1440, 810),
    ),
    ("150% seen as logical points", MonitorGeometry(0, 0, 2880, 1620, 1.5), (500, 500), (1440, 810), (960, 540)),
    (
        "monitor left of primary (negative x)",
        MonitorGeometry(-1920, 0, 1920, 1080),
        (100, 200),
        (192, 216),
        (-1728, 216),
    ),
    (
        "monitor above and left, Retina",
        MonitorGeometry(-1440, -900, 2880, 1800, 2.0),
        (500, 500),
        (1440, 900),
        (-720, -450),
    ),
    (
        "second monitor right of a 1366x768 primary",
        MonitorGeometry(1366, 0, 1280, 1024),
        (500, 500),
        (640, 512),
        (2006, 512),
    ),
    ("odd size 1366x768", MonitorGeometry(0, 0, 1366, 768), (333, 667), (455, 512), (455, 512)),
    ("box -> its centre", MonitorGeometry(0, 0, 1000, 1000), (100, 200, 300, 400), (200, 300), (200, 300)),
    ("box on 1366x768", MonitorGeometry(0, 0, 1366, 768), (10, 20, 30, 40), (27, 23), (27, 23)),
]


@pytest.mark.parametrize("name,monitor,box_model,want_image,want_screen", GROUNDING, ids=[g[0] for g in GROUNDING])
def test_ground(name, monitor, box_model, want_image, want_screen):
    point_image, point_screen = ground(box_model, monitor)
    assert point_image == want_image
    assert point_screen == want_screen


@pytest.mark.parametrize("point", [(1001, 10), (10, 1500), (-1, 5), (586.0, 1446.0)])
def test_out_of_range_is_a_model_error_not_a_click(point):
    with pytest.raises(CoordinateOutOfRange, match="thousandths"):
        model_to_image(point, (1920, 1080))


def test_box_center_rejects_other_lengths():
    with pytest.raises(ValueError):
        box_center((1, 2, 3))


@pytest.mark.parametrize(
    "monitor",
    [
        MonitorGeometry(0, 0, 1920, 1080),
        MonitorGeometry(-1440, -900, 2880, 1800, 2.0),
        MonitorGeometry(1366, 0, 1280, 1024),
    ],
)
def test_screen_image_round_trip(monitor):
    for point_image in [(0, 0), (100, 50), (monitor.width - 2, monitor.height - 2)]:
        point_screen = image_to_screen(point_image, monitor)
        back = screen_to_image(point_screen, monitor)
        assert abs(back[0] - point_image[0]) < monitor.scale and abs(back[1] - point_image[1]) < monitor.scale


def test_image_to_model_inverts_model_to_image():
    size = (1366, 768)
    for point_image in [(0, 0), (683, 384), (1365, 767), (17, 701)]:
        point_model = image_to_model(point_image, size)
        again = model_to_image(point_model, size)
        assert abs(again[0] - point_image[0]) <= 1 and abs(again[1] - point_image[1]) <= 1


# The table in shared/GLM45V.md
@pytest.mark.parametrize(
    "size,tokens", [((960, 540), 646), ((1280, 720), 1196), ((1920, 1080), 2691), ((2560, 1440), 4641)]
)
def test_image_tokens_match_the_model_card(size, tokens):
    assert image_tokens(size) == tokens


def test_4k_is_capped_by_the_server():
    assert 5800 <= image_tokens((3840, 2160)) <= 6144


@pytest.mark.parametrize("size", [(1920, 1080), (1280, 800), (1366, 768), (900, 1600)])
def test_within_budget_keeps_native_size(size):
    assert fit_to_tokens(size, 2700) == size


@pytest.mark.parametrize("size", [(2560, 1440), (3840, 2160), (2880, 1800), (5120, 1440)])
def test_over_budget_downscales_to_multiples_of_28_keeping_aspect(size):
    width, height = fit_to_tokens(size, 2700)
    assert width % 28 == 0 and height % 28 == 0
    assert image_tokens((width, height)) <= 2700
    assert image_tokens((width, height)) >= 2700 * 0.85  # not needlessly small
    assert abs(width / height - size[0] / size[1]) / (size[0] / size[1]) < 0.05
