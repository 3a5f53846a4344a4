"""A small Tk window that live tests drive with real input and that reports what it received.

Run as ``python tests/apps/target_app.py EVENTS_FILE [--geometry WxH+X+Y] [--title TITLE]
[--small-target PX]``. Every event is
appended to EVENTS_FILE as one JSON line, flushed at once. All coordinates are root (screen)
pixels, and every event carries ``"t"``, the wall-clock time it was logged. The events:

* ``{"event": "ready", "window": R, "widgets": {"ok": R, "entry": R, "canvas": R[, "small": R]},
  "screen": {"width": W, "height": H}}`` once the window is mapped, placed and focused,
  where R is ``{"x", "y", "width", "height"}`` of the inside of the window or widget.
* ``{"event": "click", "widget": "ok"|"entry"|"canvas"|"small"|"window", "button": 1|2|3,
  "x_root", "y_root"}`` on every button press (so a double-click gives two of these);
* ``{"event": "double_click", "widget", "x_root", "y_root"}`` on the second press of a
  left double-click;
* ``{"event": "entry", "text": "<the entry's whole text>"}`` on every change of the entry;
* ``{"event": "key", "keysym", "state", "char"}`` for each key press in the entry
  (``state`` is the X modifier mask: 1 Shift, 4 Control, 8 Alt);
* ``{"event": "drag", "start": [x, y], "end": [x, y], "motions": n}`` when a left-button
  press on the canvas is released (``motions`` counts the motion events in between);
* ``{"event": "scroll", "direction": "up"|"down", "x_root", "y_root"}`` per wheel click on
  the canvas.

The widgets are pure colours so a screenshot-based locator can find them: the OK button is
magenta (#FF00FF, also when hovered), the entry cyan (#00FFFF), the canvas yellow (#FFFF00).
With ``--small-target PX`` there is also "small", a PX x PX green square (#00C800) that does
nothing but log its clicks (a tiny icon, for zoom-in re-grounding).
"""

from __future__ import annotations

import argparse
import json
import time
import tkinter as tk

MAGENTA, CYAN, YELLOW, GREEN = "#FF00FF", "#00FFFF", "#FFFF00", "#00C800"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events_file")
    parser.add_argument("--geometry", default="720x520+140+90", help="Tk geometry WxH+X+Y")
    parser.add_argument("--title", default="deskpilot target", help="the window title")
    parser.add_argument("--small-target", type=int, metavar="PX", help="add a PX x PX green square")
    args = parser.parse_args()
    out = open(args.events_file, "a", encoding="utf-8")

    def log(event: str, **fields) -> None:
        out.write(json.dumps({"event": event, **fields, "t": time.time()}, ensure_ascii=False) + "\n")
        out.flush()

    root = tk.Tk()
    root.title(args.title)
    root.geometry(args.geometry)
    root.configure(background="#D0D0D0")

    ok = tk.Button(
        root,
        text="OK",
        font=("Helvetica", 20, "bold"),
        background=MAGENTA,
        activebackground=MAGENTA,
        foreground="black",
        activeforeground="black",
        relief="flat",
        borderwidth=0,
        highlightthickness=0,
    )
    text = tk.StringVar(root)
    entry = tk.Entry(
        root,
        textvariable=text,
        background=CYAN,
        foreground="black",
        font=("DejaVu Sans", 16),
        relief="flat",
        borderwidth=0,
        highlightthickness=0,
    )
    canvas = tk.Canvas(root, background=YELLOW, borderwidth=0, highlightthickness=0)
    # Relative placement keeps the layout sensible for any --geometry and off the top-left.
    ok.place(relx=0.55, rely=0.08, relwidth=0.3, relheight=0.22)
    entry.place(relx=0.08, rely=0.40, relwidth=0.6, height=40)
    canvas.place(relx=0.08, rely=0.56, relwidth=0.84, relheight=0.38)
    widgets = {"ok": ok, "entry": entry, "canvas": canvas, "window": root}
    if args.small_target:
        small = tk.Frame(root, background=GREEN, width=args.small_target, height=args.small_target)
        small.place(relx=0.3, rely=0.2)
        widgets["small"] = small

    def rect(w: tk.Misc) -> dict:
        return {"x": w.winfo_rootx(), "y": w.winfo_rooty(), "width": w.winfo_width(), "height": w.winfo_height()}

    # Click logging sits on its own bind tag so the widgets' class bindings (entry focus,
    # button press) and the <Double-Button-1> binding all still fire.
    for name, widget in widgets.items():
        widget.bindtags(("clicklog_" + name,) + widget.bindtags())
        root.bind_class(
            "clicklog_" + name,
            "<ButtonPress>",
            lambda e, n=name: (
                log("click", widget=n, button=e.num, x_root=e.x_root, y_root=e.y_root)
                if e.num in (1, 2, 3) and (n != "window" or e.widget is root)
                else None
            ),
        )
        widget.bind(
            "<Double-Button-1>",
            lambda e, n=name: (
                log("double_click", widget=n, x_root=e.x_root, y_root=e.y_root)
                if n != "window" or e.widget is root
                else None
            ),
        )

    text.trace_add("write", lambda *_: log("entry", text=text.get()))
    entry.bind("<KeyPress>", lambda e: log("key", keysym=e.keysym, state=e.state, char=e.char))

    drag: dict = {}

    def press(e: tk.Event) -> None:
        drag.update(start=[e.x_root, e.y_root], motions=0)

    def motion(e: tk.Event) -> None:
        if drag:
            drag["motions"] += 1

    def release(e: tk.Event) -> None:
        if drag:
            log("drag", start=drag["start"], end=[e.x_root, e.y_root], motions=drag["motions"])
            drag.clear()

    canvas.bind("<ButtonPress-1>", press)
    canvas.bind("<B1-Motion>", motion)
    canvas.bind("<ButtonRelease-1>", release)
    for button, direction in ((4, "up"), (5, "down")):
        canvas.bind(
            f"<Button-{button}>", lambda e, d=direction: log("scroll", direction=d, x_root=e.x_root, y_root=e.y_root)
        )
    canvas.bind(
        "<MouseWheel>",
        lambda e: log(  # Windows and macOS
            "scroll", direction="up" if e.delta > 0 else "down", x_root=e.x_root, y_root=e.y_root
        ),
    )

    def announce() -> None:
        root.lift()
        root.focus_force()
        root.update_idletasks()
        log(
            "ready",
            window=rect(root),
            widgets={n: rect(w) for n, w in widgets.items() if w is not root},
            screen={"width": root.winfo_screenwidth(), "height": root.winfo_screenheight()},
        )

    # Wait until the window manager has mapped and placed the window, then let it settle.
    root.wait_visibility(root)
    root.after(150, announce)
    root.mainloop()


if __name__ == "__main__":
    main()
