"""Table tests for the four coordinate spaces and the image-token arithmetic."""

import pytest

from agent.errors import CoordinateOutOfRange
from agent.geometry import (
    MonitorGeometry,
    Target,
    box_center,
    box_to_image,
    crop_around,
    crop_to_image,
    fit_to_tokens,
    ground,
    ground_box,
    image_to_crop,
    image_to_model,
    image_to_screen,
    image_tokens,
    model_to_crop,
    model_to_image,
    screen_to_image,
    zoom_size,
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


# --- crop space (zoom-in re-grounding) ----------------------------------------------------

# name, centre in image pixels, side, image size, expected crop (left, top, width, height)
CROPS = [
    ("centred", (1280, 720), 256, (2560, 1440), (1152, 592, 256, 256)),
    ("pushed in from the top-left corner", (10, 5), 256, (2560, 1440), (0, 0, 256, 256)),
    ("pushed in from the bottom-right corner", (2555, 1439), 256, (2560, 1440), (2304, 1184, 256, 256)),
    ("odd side rounds its origin", (100.5, 100.5), 201, (1366, 768), (0, 0, 201, 201)),
    ("odd centre", (683, 384), 201, (1366, 768), (582, 284, 201, 201)),
    ("cut to a small image", (50, 40), 256, (200, 100), (0, 0, 200, 100)),
    ("4K, near the right edge", (3830, 100), 384, (3840, 2160), (3456, 0, 384, 384)),
]


@pytest.mark.parametrize("name,center_image,side,size_image,want", CROPS, ids=[c[0] for c in CROPS])
def test_crop_around(name, center_image, side, size_image, want):
    crop_image = crop_around(center_image, side, size_image)
    assert crop_image == want
    left, top, width, height = crop_image
    assert 0 <= left and 0 <= top and left + width <= size_image[0] and top + height <= size_image[1]


# name, monitor, crop, thousandths of the crop, expected image pixel, expected screen point
CROP_GROUNDING = [
    ("crop centre", MonitorGeometry(0, 0, 2560, 1440), (1152, 592, 256, 256), (500, 500), (1280, 720), (1280, 720)),
    ("crop top-left", MonitorGeometry(0, 0, 2560, 1440), (1152, 592, 256, 256), (0, 0), (1152, 592), (1152, 592)),
    (
        "999 is the crop's last pixel",
        MonitorGeometry(0, 0, 2560, 1440),
        (0, 0, 256, 256),
        (999, 999),
        (256 - 1, 255),
        (255, 255),
    ),
    (
        "1000 clamps inside the crop",
        MonitorGeometry(0, 0, 2560, 1440),
        (100, 100, 256, 256),
        (1000, 1000),
        (355, 355),
        (355, 355),
    ),
    (
        "a box's centre",
        MonitorGeometry(0, 0, 3840, 2160),
        (3456, 0, 384, 384),
        (400, 400, 600, 600),
        (3648, 192),
        (3648, 192),
    ),
    (
        "Retina, monitor left of the primary",
        MonitorGeometry(-1440, -900, 2880, 1800, 2.0),
        (1000, 800, 300, 300),
        (250, 750),
        (1075, 1025),
        (-1440 + 537, -900 + 512),
    ),
    (
        "odd crop on 1366x768",
        MonitorGeometry(1366, 0, 1366, 768),
        (582, 284, 201, 201),
        (333, 667),
        (649, 418),
        (2015, 418),
    ),
]


@pytest.mark.parametrize(
    "name,monitor,crop_image,box_model,want_image,want_screen", CROP_GROUNDING, ids=[c[0] for c in CROP_GROUNDING]
)
def test_ground_through_a_crop(name, monitor, crop_image, box_model, want_image, want_screen):
    point_image, point_screen = ground(box_model, monitor, crop_image)
    assert point_image == want_image and point_screen == want_screen
    target = ground_box(box_model, monitor, crop_image)
    assert target == Target(tuple(box_model), want_image, want_screen, crop_image)


def test_crop_out_of_range_is_a_model_error():
    with pytest.raises(CoordinateOutOfRange):
        ground((1200, 10), MonitorGeometry(0, 0, 2560, 1440), (0, 0, 256, 256))


def test_crop_and_image_round_trip():
    crop_image = (582, 284, 201, 201)
    for point_crop in [(0, 0), (100, 57), (200, 200)]:
        point_image = crop_to_image(point_crop, crop_image)
        assert image_to_crop(point_image, crop_image) == point_crop
        assert model_to_crop(image_to_model(point_crop, (201, 201)), crop_image) == point_crop


@pytest.mark.parametrize(
    "box_model,size_image,crop_image,want",
    [
        ((500, 500), (2000, 1000), None, (1000.0, 500.0)),
        ((100, 200, 300, 400), (2000, 1000), None, (200.0, 200.0, 600.0, 400.0)),
        ((0, 0, 1000, 500), (2000, 1000), (100, 50, 200, 100), (100.0, 50.0, 300.0, 100.0)),
        ((500, 500), (2000, 1000), (100, 50, 200, 100), (200.0, 100.0)),
    ],
)
def test_box_to_image(box_model, size_image, crop_image, want):
    assert box_to_image(box_model, size_image, crop_image) == want


@pytest.mark.parametrize(
    "size_crop,max_tokens,max_upscale,want",
    [
        ((256, 256), 784, 4, (784, 784)),  # enlarged until the budget: 28x28 patches
        ((100, 100), 784, 4, (392, 392)),  # enlarged 4x at most, then onto the grid
        ((384, 384), 784, 4, (784, 784)),
        ((384, 216), 784, 4, (1036, 588)),  # a wide crop keeps its aspect
        ((256, 256), 100, 4, (280, 280)),  # a small budget: 10x10 patches
        ((256, 256), 2700, 1, (252, 252)),  # no enlarging: the crop itself, on the grid
        ((10, 10), 784, 1, (28, 28)),  # never below one patch
    ],
)
def test_zoom_size(size_crop, max_tokens, max_upscale, want):
    size = zoom_size(size_crop, max_tokens, max_upscale)
    assert size == want
    assert size[0] % 28 == 0 and size[1] % 28 == 0 and image_tokens(size) <= max(max_tokens, 1)
