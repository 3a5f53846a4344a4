"""Regenerate the example recordings in recordings/examples/ from real runs of the CLI.

    python tests/make_examples.py            # the dry-run examples (no display needed)
    python tests/make_examples.py --live     # also the live ones (needs Xvfb, openbox, Tk, xdotool)

Each example is ``deskpilot run`` as a user would start it (a subprocess), against the local
fake model server (agent.fakeserver) whose brain finds the form's cyan field and magenta OK
button by colour in the screenshot it is sent. No API key, no network. The recording is
then moved to a stable name and its PNGs are re-compressed losslessly (same pixels,
smaller files), so the examples stay a few hundred KB in all.

``form-recorded-person`` is ``deskpilot record`` watching xdotool fill in the same form, as a
person would (no model at all).

The replay tests run ``replay --mode check`` and ``simulate`` over every example, so a
parser or grounding change that would alter a recorded run fails the suite.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.fakeserver import FakeModelServer  # noqa: E402
from tests.fake_brains import FormBrain, steps_done  # noqa: E402

EXAMPLES = ROOT / "recordings" / "examples"
SCREENS = ROOT / "tests" / "screens" / "dialog"
TASK = "type report.txt into the name field and press OK"


class HesitantFormBrain(FormBrain):
    """FormBrain that first answers step 2 without an action, to show a rejected reply and its retry."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.hesitated = False

    def __call__(self, body: dict[str, Any]) -> Any:
        if steps_done(body) == 1 and not self.hesitated:
            self.hesitated = True
            return "The field is focused now. I will type the file name next."
        return super().__call__(body)


def run_cli(brain: Any, args: list[str], env: dict[str, str] | None = None) -> Path:
    """One `deskpilot run` against the fake server; returns the recording folder."""
    out = Path(tempfile.mkdtemp(prefix="deskpilot-example-"))
    with FakeModelServer(brain) as server:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent",
                "run",
                TASK,
                "--provider",
                "vllm",
                "--base-url",
                server.base_url,
                "--recordings",
                str(out),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env=env if env is not None else _env(),
        )
    print(proc.stdout, end="")
    if proc.returncode != 0:
        raise SystemExit(f"deskpilot run failed ({proc.returncode}):\n{proc.stderr}")
    (folder,) = out.iterdir()
    return folder


def _env() -> dict[str, str]:
    import os

    keys = (
        "DESKPILOT_API_KEY",
        "SILICONFLOW_API_KEY",
        "ZAI_API_KEY",
        "BIGMODEL_API_KEY",
        "OPENROUTER_API_KEY",
        "OPENAI_API_KEY",
    )
    env = {k: v for k, v in os.environ.items() if k not in keys}
    env["PYTHONPATH"] = str(ROOT)
    return env


def publish(folder: Path, name: str) -> Path:
    """Move a recording into recordings/examples/NAME with losslessly re-compressed PNGs."""
    from PIL import Image

    target = EXAMPLES / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("report.html", "replay"))
    shutil.rmtree(folder.parent)
    for png in (target / "screens").glob("*.png"):
        with Image.open(png) as img:
            img.load()
            img.save(png, format="PNG", optimize=True)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"wrote {target.relative_to(ROOT)} ({size / 1024:.0f} KB)")
    return target


def dry_run_examples() -> None:
    for protocol in ("text", "tools"):
        folder = run_cli(
            HesitantFormBrain("report.txt"), ["--screens", str(SCREENS), "--protocol", protocol, "--max-steps", "8"]
        )
        publish(folder, f"form-dry-run-{protocol}")


def live_example() -> None:
    """A live run under Xvfb: real captures of the Tk target app, real pyautogui input."""
    import os

    from tests.live_support import TargetApp, have_xvfb, xvfb_display

    if not have_xvfb():
        raise SystemExit("the live example needs Xvfb (and openbox, Tk)")
    with xvfb_display(960, 640), TargetApp(geometry="720x520+120+60") as app:
        folder = run_cli(
            FormBrain("report.txt"),
            ["--protocol", "tools", "--max-steps", "8"],
            env={**_env(), "DISPLAY": os.environ["DISPLAY"]},
        )
        app.wait_for(lambda events: any(e.get("widget") == "ok" for e in events), 5)
        typed = [e["text"] for e in app.events() if e["event"] == "entry"]
        if not typed or typed[-1] != "report.txt":
            raise SystemExit(f"the live run did not type into the app: {app.events()}")
    publish(folder, "form-live-xvfb")


def person_example() -> None:
    """``deskpilot record`` under Xvfb while xdotool clicks the field, types and presses OK."""
    import os
    import time

    from tests.live_support import TargetApp, have_xvfb, xvfb_display

    if not have_xvfb():
        raise SystemExit("the recorded example needs Xvfb (and openbox, Tk, xdotool)")
    out = Path(tempfile.mkdtemp(prefix="deskpilot-example-"))
    with xvfb_display(960, 640), TargetApp(geometry="720x520+120+60") as app:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "record", "--task", TASK, "--recordings", str(out)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**_env(), "DISPLAY": os.environ["DISPLAY"]},
        )
        if "ready" not in (proc.stdout.readline() if proc.stdout else ""):
            raise SystemExit("deskpilot record did not start")
        for action, wait in (
            (["mousemove", *map(str, app.center("entry")), "click", "1"], ("click", "entry")),
            (["type", "--delay", "80", "report.txt"], ("entry", "report.txt")),
            (["mousemove", *map(str, app.center("ok")), "click", "1"], ("click", "ok")),
        ):
            subprocess.run(["xdotool", *action], check=True)
            app.wait_for(lambda events, w=wait: any(w[1] in (e.get("widget"), e.get("text")) for e in events), 10)
            time.sleep(0.5)
        subprocess.run(["xdotool", "key", "--delay", "80", "Escape", "Escape", "Escape"], check=True)
        print(proc.communicate(timeout=60)[0], end="")
    if proc.returncode != 0:
        raise SystemExit(f"deskpilot record failed ({proc.returncode})")
    (folder,) = out.iterdir()
    publish(folder, "form-recorded-person")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", action="store_true", help="also record the live examples under Xvfb")
    args = parser.parse_args()
    EXAMPLES.mkdir(parents=True, exist_ok=True)
    dry_run_examples()
    if args.live:
        live_example()
        person_example()


if __name__ == "__main__":
    main()
