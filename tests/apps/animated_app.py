"""A small Tk window for the live settle tests: an entry whose cursor blinks every 60 ms
(focused, so it really blinks) above a canvas with a blue box that moves only on request.

Run as ``python tests/apps/animated_app.py`` on the display to use. It writes one word a line
to stdout: ``ready`` once the window is up and the entry focused, and ``started`` when an
animation has drawn its first frame. It reads commands from stdin, one a line:
``animate SECONDS`` moves the box 12 px every 16 ms for that long (wrapping at the right).
"""

from __future__ import annotations

import queue
import sys
import threading
import tkinter as tk


def main() -> None:
    root = tk.Tk()
    root.geometry("420x300+40+40")
    entry = tk.Entry(root, insertontime=60, insertofftime=60, insertwidth=3, font=("TkFixedFont", 16))
    entry.pack(fill="x", padx=10, pady=10)
    canvas = tk.Canvas(root, width=400, height=200, bg="white", highlightthickness=0)
    canvas.pack()
    box = canvas.create_rectangle(0, 60, 60, 120, fill="blue")
    commands: queue.Queue[list[str]] = queue.Queue()

    def read_commands() -> None:  # Tk is not thread-safe: the Tk thread polls the queue
        for line in sys.stdin:
            commands.put(line.split())

    threading.Thread(target=read_commands, daemon=True).start()

    def now_ms() -> int:
        return int(root.tk.call("clock", "milliseconds"))

    def animate(until: int, first: bool = False) -> None:
        canvas.move(box, 12, 0)
        if canvas.coords(box)[0] > 340:
            canvas.coords(box, 0, 60, 60, 120)
        root.update_idletasks()
        if first:
            print("started", flush=True)
        if now_ms() < until:
            root.after(16, animate, until)

    def poll() -> None:
        while not commands.empty():
            command = commands.get()
            if command and command[0] == "animate":
                animate(now_ms() + int(float(command[1]) * 1000), first=True)
        root.after(5, poll)

    def ready() -> None:
        entry.focus_force()
        root.update()
        print("ready", flush=True)

    root.after(300, ready)
    root.after(5, poll)
    root.mainloop()


if __name__ == "__main__":
    main()
