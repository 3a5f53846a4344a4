"""``deskpilot doctor``: what deskpilot finds on this desktop and endpoint, as data for a bug report.

``diagnose`` runs the checks and returns a ``Report``; nothing here prints (the command does,
as text or JSON). Each ``Check`` has a status: ``ok``, ``problem`` (with the ``fix`` to apply),
``info`` (worth knowing, nothing to fix) or ``skipped`` (an earlier check failed). The desktop
checks, in order:

* ``session``: X11, Wayland or XWayland, DISPLAY, the X server's vendor and screens;
* ``x extensions``: XTEST (input), RECORD (the hotkeys listen with it), RandR (monitors);
* ``monitors``: every monitor as mss numbers it (``--monitor N``), its origin and size, its
  scale (captured pixels per screen unit, measured by capturing it) and DPI where RandR
  gives a physical size; the desktop's own UI scale (Xft.dpi, GDK_SCALE, QT_SCALE_FACTOR);
* ``pyautogui``, ``pynput``: the screen size and pointer each of them sees, and pynput's backend;
* ``keyboard``: XKB rules, model, layouts, variants, options and the active group (typing
  presses the first layout's keys, so another active group types wrong characters);
* ``hotkeys``: whether the kill and takeover hotkey listeners start;
* ``pointer``: moves the pointer with deskpilot's own executor to the inset corners and the
  centre of each monitor and reads each point back through pyautogui, pynput and Xlib; any
  offset is a problem. The pointer is put back where it was.

``provider`` says which endpoint, model and key variable a run would use (never the key).
With ``endpoint`` one small request is made: the key accepted, the model id known, tools
accepted or rejected (then the text format is used), and a one-image grounding round trip (a
drawn red button the model must click; its answer is parsed and grounded like a run's).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from PIL import Image, ImageDraw

from agent.errors import AuthRejected, DeskpilotError, EndpointError, ModelError

Status = Literal["ok", "problem", "info", "skipped"]
POINTER_INSET = 5  # px from each edge: corners exactly would trip pyautogui's fail-safe
TARGET_IMAGE = (1280, 800)  # the endpoint round trip's drawn screen, image space
TARGET_BOX = (840, 520, 1000, 590)  # its red button, image space (x1, y1, x2, y2)


@dataclass
class Check:
    """One finding: what was looked at, what was found, and for a problem, what to do."""

    name: str
    status: Status
    summary: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    checks: list[Check]

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.status == "problem"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "python": sys.version.split()[0],
            "platform": sys.platform,
            "checks": [asdict(c) for c in self.checks],
        }


def diagnose(
    *,
    kill_hotkey: str,
    takeover_hotkey: str,
    settings: Callable[[], Any],
    endpoint: bool = False,
    move_pointer: bool = True,
    transport: Any = None,
) -> Report:
    """Every check. ``settings`` builds the run's Settings (it may raise a DeskpilotError, e.g.
    no key: then that is the provider problem); ``transport`` is for tests (httpx)."""
    checks = desktop_checks(kill_hotkey, takeover_hotkey, move_pointer)
    try:
        resolved = settings()
    except DeskpilotError as exc:
        checks.append(Check("provider", "problem", "the provider settings are not usable", str(exc)))
        if endpoint:
            checks.append(Check("endpoint", "skipped", "no usable provider settings"))
        return Report(checks)
    checks.append(provider_check(resolved))
    if endpoint:
        checks += endpoint_checks(resolved, transport)
    return Report(checks)


# --- the desktop -------------------------------------------------------------------------------


def desktop_checks(kill_hotkey: str, takeover_hotkey: str, move_pointer: bool = True) -> list[Check]:
    session, display = _session()
    checks = [session]
    if display is None:
        names = ("x extensions", "monitors", "pyautogui", "pynput", "keyboard", "hotkeys", "pointer")
        return checks + [Check(name, "skipped", "no X display") for name in names]
    try:
        extensions = _extensions(display)
        checks.append(extensions)
        monitors_check, monitors = _monitors(display)
        checks.append(monitors_check)
        checks.append(_pyautogui(display))
        checks.append(_pynput(display))
        checks.append(_keyboard(display))
        checks.append(_hotkeys(kill_hotkey, takeover_hotkey, extensions.data.get("RECORD", False)))
        if not move_pointer:
            checks.append(Check("pointer", "skipped", "not moved (--no-pointer)"))
        elif not extensions.data.get("XTEST", False):
            checks.append(Check("pointer", "skipped", "no XTEST: deskpilot cannot move the pointer"))
        else:
            checks.append(_pointer(display, monitors))
    finally:
        display.close()
    return checks


def _session() -> tuple[Check, Any]:
    """The session type and an open Xlib display (None when there is none)."""
    env = {k: os.environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE")}
    wayland = env["XDG_SESSION_TYPE"] == "wayland" or bool(env["WAYLAND_DISPLAY"])
    kind = ("xwayland" if wayland else "x11") if env["DISPLAY"] else ("wayland" if wayland else "none")
    data: dict[str, Any] = {"type": kind, **env}
    if not env["DISPLAY"]:
        if kind == "wayland":
            fix = "log in to an X11 session (at the login screen, e.g. 'GNOME on Xorg'), or use --dry-run --screens"
            return Check("session", "problem", "Wayland without an X display", fix, data), None
        return Check("session", "problem", "no display: DISPLAY is not set", "set DISPLAY, e.g. DISPLAY=:0", data), None
    from Xlib import error
    from Xlib.display import Display

    try:
        display = Display(env["DISPLAY"])
    except (error.DisplayError, error.ConnectionClosedError, OSError) as exc:
        fix = "set DISPLAY to a running X server (echo $DISPLAY in a terminal of the desktop)"
        return Check("session", "problem", f"cannot open X display {env['DISPLAY']!r}: {exc}", fix, data), None
    info = display.display.info
    data.update(
        server_vendor=str(info.vendor).rstrip("\0"),
        vendor_release=info.release_number,
        x_screens=display.screen_count(),
    )
    summary = f"{kind.upper() if kind == 'x11' else 'XWayland'}, DISPLAY={env['DISPLAY']} ({data['server_vendor']})"
    if kind == "xwayland":
        fix = (
            "log in to an X11 session: through XWayland deskpilot sees and drives only X11 windows, "
            "and native Wayland windows show up black"
        )
        return Check("session", "problem", summary, fix, data), display
    return Check("session", "ok", summary, data=data), display


def _extensions(display: Any) -> Check:
    data = {name: display.query_extension(name) is not None for name in ("XTEST", "RECORD", "RANDR", "XKEYBOARD")}
    missing = [name for name in ("XTEST", "RECORD") if not data[name]]
    if missing:
        why = {"XTEST": "no input can be sent", "RECORD": "the kill and takeover hotkeys cannot listen"}
        fix = "; ".join(f"{name}: {why[name]}" for name in missing)
        return Check(
            "x extensions", "problem", f"missing {', '.join(missing)}",
            f"{fix}: start the X server with +extension {' +extension '.join(missing)}", data,
        )  # fmt: skip
    note = "" if data["RANDR"] else " (no RandR: mss sees the whole screen as one monitor)"
    return Check("x extensions", "ok" if data["RANDR"] else "info", "XTEST, RECORD present" + note, data=data)


def _open_mss() -> Any:
    import mss

    return (getattr(mss, "MSS", None) or mss.mss)()  # mss 10 renamed the class


def _monitors(display: Any) -> tuple[Check, list[dict[str, Any]]]:
    """Every mss monitor with its measured scale, and the desktop's UI scale."""
    try:
        sct = _open_mss()
    except Exception as exc:  # mss raises ScreenShotError and friends
        fix = "check that DISPLAY names this desktop's X server"
        return Check("monitors", "problem", f"mss cannot open the display: {exc}", fix), []
    physical = _randr_sizes(display)
    monitors = []
    try:
        for index, mon in enumerate(sct.monitors):
            shot = sct.grab(mon)
            entry = {
                "index": index,
                "left": mon["left"],
                "top": mon["top"],
                "width": mon["width"],
                "height": mon["height"],
                "scale": round(shot.size[0] / mon["width"], 3) if mon["width"] else None,
                "primary": bool(mon.get("is_primary", False)),
                "output": mon.get("output") or mon.get("name"),
            }
            mm = physical.get((mon["left"], mon["top"], mon["width"], mon["height"]))
            if index > 0 and mm and mm[0] > 0:
                entry["dpi"] = round(mon["width"] / (mm[0] / 25.4))
            monitors.append(entry)
    finally:
        sct.close()
    ui = _ui_scale(display)
    data = {"monitors": monitors, "ui_scale": ui}
    singles = monitors[1:]
    if not singles:
        return Check("monitors", "problem", "mss finds no monitor", "check the X server's RandR setup", data), []
    listed = "; ".join(
        f"{m['index']} = {m['width']}x{m['height']} at ({m['left']}, {m['top']}), scale {m['scale']:g}"
        + (" primary" if m["primary"] else "")
        for m in singles
    )
    summary = f"{len(singles)} (--monitor N, 0 = all): {listed}"
    odd = [m for m in singles if m["scale"] != 1.0]
    if odd:
        return Check("monitors", "info", summary + "; captures are scaled: deskpilot converts", data=data), singles
    return Check("monitors", "ok", summary, data=data), singles


def _randr_sizes(display: Any) -> dict[tuple[int, int, int, int], tuple[int, int]]:
    """RandR monitors' physical sizes in mm, by their rectangle (empty without RandR 1.5)."""
    try:
        reply = display.screen().root.xrandr_get_monitors()
    except Exception:  # no RandR, or older than 1.5
        return {}
    return {
        (m.x, m.y, m.width_in_pixels, m.height_in_pixels): (m.width_in_millimeters, m.height_in_millimeters)
        for m in reply.monitors
    }


def _ui_scale(display: Any) -> dict[str, Any]:
    """How big the desktop draws its widgets: Xft.dpi and the toolkits' scale variables."""
    from Xlib import Xatom

    dpi = None
    resources = display.screen().root.get_full_property(Xatom.RESOURCE_MANAGER, Xatom.STRING)
    if resources is not None:
        raw = resources.value
        text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "Xft.dpi":
                dpi = value.strip()
    scale = {k: os.environ.get(k) for k in ("GDK_SCALE", "GDK_DPI_SCALE", "QT_SCALE_FACTOR")}
    return {"Xft.dpi": dpi, **{k: v for k, v in scale.items() if v}}


def _pyautogui(display: Any) -> Check:
    try:
        from actions.pyautogui_executor import bind_pyautogui

        gui = bind_pyautogui(os.environ.get("DISPLAY"))
        size, position = tuple(gui.size()), tuple(gui.position())
    except Exception as exc:
        fix = "check DISPLAY, and that pyautogui is installed (pip install pyautogui)"
        return Check("pyautogui", "problem", f"pyautogui cannot use the display: {exc}", fix)
    root = display.screen()
    desktop = (root.width_in_pixels, root.height_in_pixels)
    data = {"size": list(size), "position": list(position), "x_root_size": list(desktop)}
    summary = f"screen {size[0]}x{size[1]}, pointer at {position}"
    if size != desktop:
        fix = f"pyautogui sees {size[0]}x{size[1]} but the X root window is {desktop[0]}x{desktop[1]}: report this"
        return Check("pyautogui", "problem", summary, fix, data)
    return Check("pyautogui", "ok", summary, data=data)


def _pynput(display: Any) -> Check:
    try:
        from pynput import mouse

        controller = mouse.Controller()
        position = tuple(int(v) for v in controller.position)
        backend = type(controller).__module__.rsplit(".", 1)[-1].lstrip("_")
    except Exception as exc:
        fix = "check DISPLAY, and that pynput is installed (pip install pynput)"
        return Check("pynput", "problem", f"pynput cannot use the display: {exc}", fix)
    pointer = display.screen().root.query_pointer()
    data = {"backend": backend, "position": list(position), "x_pointer": [pointer.root_x, pointer.root_y]}
    summary = f"backend {backend}, pointer at {position}"
    if sys.platform.startswith("linux") and backend != "xorg":
        fix = f"pynput uses its {backend!r} backend; deskpilot's hotkeys need xorg: unset PYNPUT_BACKEND"
        return Check("pynput", "problem", summary, fix, data)
    return Check("pynput", "ok", summary, data=data)


def _keyboard(display: Any) -> Check:
    from Xlib import X

    data: dict[str, Any] = {}
    names = display.screen().root.get_full_property(display.intern_atom("_XKB_RULES_NAMES"), X.AnyPropertyType)
    if names is not None:
        raw = names.value
        parts = (raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)).split("\0")
        data.update(zip(("rules", "model", "layout", "variant", "options"), parts))
    layouts = [x for x in data.get("layout", "").split(",")]
    group = (display.screen().root.query_pointer().mask >> 13) & 3  # XKB puts the group in bits 13-14
    data["group"] = group
    active = layouts[group] if group < len(layouts) and layouts[group] else f"group {group + 1}"
    summary = f"layouts {data.get('layout') or 'unknown'}, active {active} (group {group + 1})"
    if data.get("variant"):
        summary += f", variants {data['variant']}"
    if group != 0:
        first = layouts[0] if layouts and layouts[0] else "the first layout"
        fix = (
            f"switch to {first} before a run: deskpilot types with the keys of the first layout, "
            f"so text typed while {active} is active comes out as other characters"
        )
        return Check("keyboard", "problem", summary, fix, data)
    return Check("keyboard", "ok", summary, data=data)


def _hotkeys(kill_hotkey: str, takeover_hotkey: str, record: bool) -> Check:
    from agent.safety import Hotkey, describe_hotkey

    data: dict[str, Any] = {}
    failed = []
    for what, spec in (("kill hotkey", kill_hotkey), ("takeover hotkey", takeover_hotkey)):
        if spec.strip().lower() == "none":
            data[what] = "off"
            continue
        t0 = time.monotonic()
        try:
            hotkey = Hotkey(spec, lambda: None, what=what).start()
            hotkey.stop()
            data[what] = {"spec": spec, "started_in_s": round(time.monotonic() - t0, 3)}
        except DeskpilotError as exc:
            data[what] = {"spec": spec, "error": str(exc)}
            failed.append(f"{what}: {exc}")
    if failed:
        fix = "enable the RECORD extension of the X server" if not record else "report this output"
        return Check("hotkeys", "problem", "; ".join(failed), fix, data)
    listening = [f"{describe_hotkey(d['spec'])} ({w})" for w, d in data.items() if isinstance(d, dict)]
    return Check("hotkeys", "ok", "listening for " + ", ".join(listening or ["nothing"]), data=data)


def pointer_points(monitor: dict[str, Any], inset: int = POINTER_INSET) -> list[tuple[int, int]]:
    """The points tried on one monitor, in screen space: the four corners moved ``inset``
    pixels inwards, then the centre."""
    left, top, width, height = monitor["left"], monitor["top"], monitor["width"], monitor["height"]
    right, bottom = left + width - 1 - inset, top + height - 1 - inset
    return [
        (left + inset, top + inset),
        (right, top + inset),
        (left + inset, bottom),
        (right, bottom),
        (left + width // 2, top + height // 2),
    ]


def _pointer(display: Any, monitors: list[dict[str, Any]]) -> Check:
    """Move the pointer with the executor runs use, read it back three ways."""
    from actions.pyautogui_executor import PyAutoGuiExecutor, bind_pyautogui
    from actions.schema import Hover

    try:
        executor = PyAutoGuiExecutor(pause=0.0)
        gui = bind_pyautogui(executor.display)
        from pynput import mouse

        controller = mouse.Controller()
    except Exception as exc:
        return Check("pointer", "problem", f"cannot drive the pointer: {exc}", "see the pyautogui and pynput checks")
    root = display.screen().root
    start = root.query_pointer()
    hover = Hover(start_box=(500, 500))  # the executor goes to the screen point it is given
    results = []
    worst = 0
    gui.FAILSAFE = False  # the pointer may rest in a corner now; the points tried are inset
    try:
        for monitor in monitors:
            for point_screen in pointer_points(monitor):
                executor.execute(hover, [point_screen])
                pointer = root.query_pointer()
                seen = {
                    "xlib": (pointer.root_x, pointer.root_y),
                    "pyautogui": tuple(gui.position()),
                    "pynput": tuple(int(v) for v in controller.position),
                }
                offset = max(abs(a - b) for xy in seen.values() for a, b in zip(xy, point_screen))
                worst = max(worst, offset)
                results.append(
                    {"monitor": monitor["index"], "target": list(point_screen), "offset": offset}
                    | {k: list(v) for k, v in seen.items()}
                )
    except DeskpilotError as exc:  # the fail-safe, or the display went away
        return Check("pointer", "problem", f"moving the pointer stopped: {exc}", "report this output")
    finally:
        gui.moveTo(start.root_x, start.root_y, _pause=False)
        gui.FAILSAFE = True
        executor.close()
    data = {"points": results, "worst_offset": worst}
    summary = f"{len(results)} points on {len(monitors)} monitor(s), worst offset {worst} px"
    if worst:
        misses = [r for r in results if r["offset"]]
        first = misses[0]
        fix = (
            f"e.g. aimed at {tuple(first['target'])}, read back xlib {tuple(first['xlib'])}: the pointer does not "
            "land where deskpilot aims; check for a pointer constraint (a monitor gap, a locked pointer) "
            "and report this output"
        )
        return Check("pointer", "problem", summary, fix, data)
    return Check("pointer", "ok", summary, data=data)


# --- the provider and the endpoint -------------------------------------------------------------


def provider_check(settings: Any) -> Check:
    preset = settings.preset
    key_from = "none needed" if preset.key_env is None and settings.api_key is None else (
        "set" if settings.api_key is not None else "not set"
    )  # fmt: skip
    data = {
        "provider": settings.provider,
        "base_url": settings.base_url,
        "model": settings.model,
        "protocol": settings.protocol,
        "thinking": settings.thinking,
        "key_variable": preset.key_env,
        "key": key_from,
    }
    summary = f"{settings.provider} {settings.model} at {settings.base_url}, key {key_from}"
    return Check("provider", "ok", summary, data=data)


def target_screen() -> Image.Image:
    """The endpoint round trip's screen: a light window with one red button (TARGET_BOX)."""
    image = Image.new("RGB", TARGET_IMAGE, (236, 236, 236))
    draw = ImageDraw.Draw(image)
    draw.rectangle((80, 60, 1200, 740), fill=(255, 255, 255), outline=(180, 180, 180), width=2)
    draw.rectangle(TARGET_BOX, fill=(220, 30, 30))
    x1, y1, x2, y2 = TARGET_BOX
    draw.text(((x1 + x2) // 2 - 8, (y1 + y2) // 2 - 5), "OK", fill=(255, 255, 255))
    return image


def endpoint_checks(settings: Any, transport: Any = None) -> list[Check]:
    """One small request: key, model, tools, and a grounding round trip (see the module docstring)."""
    from agent.geometry import MonitorGeometry
    from agent.grounding import interpret
    from agent.image import prepare_for_model
    from agent.planner import GLMPlanner
    from agent.protocol import StepRequest

    sent = prepare_for_model(target_screen(), min(settings.max_image_tokens, 1200), settings.image_encoding)
    planner = GLMPlanner(settings, transport=transport)
    request = StepRequest("Click the red OK button.", 1, sent)
    try:
        result = planner.decide(request)
    except AuthRejected as exc:
        return [
            Check("endpoint: key", "problem", "the key was rejected", str(exc)),
            Check("endpoint: model", "skipped", "the key was rejected"),
        ]
    except EndpointError as exc:
        text = str(exc)
        about_model = "HTTP 404" in text or "model" in text.partition("HTTP 4")[2].lower()
        if about_model:
            fix = f"check --model (now {settings.model!r}) and --base-url: {text}"
            return [
                Check("endpoint: key", "info", "not rejected (the server answered about the model or the URL)"),
                Check("endpoint: model", "problem", f"the server does not serve {settings.model!r}", fix),
            ]
        return [Check("endpoint", "problem", "the request failed", text)]
    finally:
        planner.close()
    raw = result.raw
    checks = [
        Check("endpoint: key", "ok", "accepted"),
        Check("endpoint: model", "ok", f"{settings.model!r} answered (as {raw.model or 'unnamed'})"),
    ]
    fell_back = any("tools rejected" in note for note in result.transport_retries)
    if settings.protocol == "text":
        checks.append(Check("endpoint: tools", "info", "not offered (--protocol text)"))
    elif fell_back:
        fix = "nothing needed: the text format is used; a vLLM/SGLang server takes tools with --tool-call-parser glm45"
        checks.append(Check("endpoint: tools", "info", "rejected by the server: fell back to the text format", fix))
    else:
        checks.append(Check("endpoint: tools", "ok", "accepted"))
    checks.append(_round_trip(raw, result, settings, interpret, MonitorGeometry(0, 0, *TARGET_IMAGE)))
    return checks


def _round_trip(raw: Any, result: Any, settings: Any, interpret: Any, monitor: Any) -> Check:
    data: dict[str, Any] = {
        "latency_s": round(result.latency_s, 3),
        "prompt_tokens": raw.prompt_tokens,
        "completion_tokens": raw.completion_tokens,
        "cost_usd": round(settings.cost(raw.prompt_tokens, raw.completion_tokens), 6),
        "target_box_image": list(TARGET_BOX),
        "reply": (raw.content or "")[:500],
        "tool_calls": raw.tool_calls,
        "protocol": result.protocol,
    }
    try:
        grounded = interpret(raw, monitor)
    except ModelError as exc:
        fix = "the reply is in data.reply: report it, it is a reply shape deskpilot does not read yet"
        return Check("endpoint: grounding", "problem", f"the reply was not usable: {exc}", fix, data)
    data["action"] = grounded.action.model_dump(mode="json")
    if not grounded.targets:
        fix = "the model did not point at anything: try --thinking, or another provider of the same model"
        return Check("endpoint: grounding", "problem", f"the model answered {grounded.action.kind}", fix, data)
    x, y = point = grounded.targets[0].point_image
    data["point_image"] = list(point)
    x1, y1, x2, y2 = TARGET_BOX
    summary = f"clicked ({x}, {y}) for the button at {TARGET_BOX}, {result.latency_s:.1f} s"
    if x1 <= x <= x2 and y1 <= y <= y2:
        return Check("endpoint: grounding", "ok", summary, data=data)
    fix = (
        "the model pointed outside the button: is it GLM-4.5V (coordinates in thousandths of the image)? "
        "check --model, and report this output"
    )
    return Check("endpoint: grounding", "problem", summary, fix, data)
