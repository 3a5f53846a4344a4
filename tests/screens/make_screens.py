"""Draw the mocked screens used by the dry-run tests (run once; the PNGs are committed).

    python tests/screens/make_screens.py

dialog/: a 1280x800 desktop with a form: a magenta OK button at (560, 500)-(720, 548) and
a cyan text field at (440, 380)-(840, 416). Two frames: before and after typing.
"""

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent
OK_BOX = (560, 500, 720, 548)
FIELD_BOX = (440, 380, 840, 416)


def dialog(typed: str) -> Image.Image:
    image = Image.new("RGB", (1280, 800), (222, 226, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 1279, 30), fill=(40, 44, 52))
    draw.rectangle((400, 300, 880, 580), fill="white", outline=(120, 120, 120))
    draw.text((440, 340), "Name your file", fill="black")
    draw.rectangle(FIELD_BOX, fill=(0, 255, 255), outline="black")
    draw.text((448, 392), typed, fill="black")
    draw.rectangle(OK_BOX, fill=(255, 0, 255))
    draw.text((630, 518), "OK", fill="black")
    return image


if __name__ == "__main__":
    out = HERE / "dialog"
    out.mkdir(exist_ok=True)
    dialog("").save(out / "01-empty.png", optimize=True)
    dialog("report.txt").save(out / "02-typed.png", optimize=True)
