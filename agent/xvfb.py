"""A private virtual X server (Xvfb, plus openbox when installed) for live tests and ``bench --live``.

``xvfb_display(width, height)`` starts Xvfb with ``-nolisten tcp`` on a display number
Xvfb picks itself (``-displayfd``), waits until it accepts connections and the window
manager has announced itself, points ``os.environ["DISPLAY"]`` at it inside the block,
and tears everything down after.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager


def have_xvfb() -> bool:
    """True when the Xvfb binary is on PATH."""
    return shutil.which("Xvfb") is not None


@contextmanager
def xvfb_display(
    width: int = 1280, height: int = 800, *, window_manager: bool = True, timeout: float = 10.0
) -> Iterator[str]:
    """Run a private Xvfb of ``width`` x ``height`` (and openbox); DISPLAY points at it inside."""
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    wm = None
    saved = os.environ.get("DISPLAY")
    try:
        name = ":" + _read_line(read_fd, timeout, xvfb)
        os.environ["DISPLAY"] = name
        _wait_for_server(name, timeout)
        if window_manager and shutil.which("openbox"):
            wm = subprocess.Popen(["openbox", "--sm-disable"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait_for_wm(name, timeout)
        yield name
    finally:
        os.close(read_fd)
        for proc in (wm, xvfb):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if saved is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = saved


def _read_line(fd: int, timeout: float, proc: subprocess.Popen) -> str:
    data = b""
    end = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        chunk = os.read(fd, 64) if ready else b""
        if not chunk:
            raise RuntimeError(f"Xvfb did not start (exit code {proc.poll()})")
        data += chunk
    return data.decode().strip()


def _wait_for_server(name: str, timeout: float) -> None:
    from Xlib.display import Display

    end = time.monotonic() + timeout
    while True:
        try:
            Display(name).close()
            return
        except Exception:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def _wait_for_wm(name: str, timeout: float) -> None:
    """Wait until a EWMH window manager has announced itself on the root window."""
    from Xlib.display import Display

    display = Display(name)
    try:
        check = display.intern_atom("_NET_SUPPORTING_WM_CHECK")
        end = time.monotonic() + timeout
        while display.screen().root.get_full_property(check, 0) is None:
            if time.monotonic() > end:
                raise RuntimeError("the window manager did not start")
            time.sleep(0.05)
    finally:
        display.close()
