"""The live bench desktop: the scene of ``scene.generate_screen`` as real Tk windows (a
photo wallpaper with icons, a task bar, a preferences dialog, a browser page with a photo,
a file list and an editor showing loop.py), laid out for a W x H screen.

Run as ``python -m agent.bench.desktop_app W H`` on the display to fill (``bench --live``
starts it on each private Xvfb through ``scene.live_desktop``). Once every window is built
it writes ``ready`` on a line of its own to stdout, then runs until it is terminated.
"""

from __future__ import annotations

import argparse
import random
import tkinter as tk
from tkinter import ttk

from PIL import ImageTk

from agent.bench.scene import code_lines, photo

WORDS = "the quick brown fox jumps over lazy dog desktop agent model screen window button".split()


def build(root: tk.Tk, width: int, height: int) -> list[ImageTk.PhotoImage]:
    """Every window of the desktop; returns the images Tk shows (keep them alive)."""
    rng = random.Random(0)
    images: list[ImageTk.PhotoImage] = []

    def window(title: str, x: float, y: float, w: float, h: float, kind: str | None = None) -> tk.Toplevel:
        top = tk.Toplevel(root)
        top.title(title)
        top.geometry(f"{int(w * width)}x{int(h * height)}+{int(x * width)}+{int(y * height)}")
        if kind:
            top.attributes("-type", kind)  # the window manager keeps it below (desktop) or on top (dock)
        return top

    wall = window("wallpaper", 0, 0, 1, 1, "desktop")
    canvas = tk.Canvas(wall, highlightthickness=0)
    canvas.pack(fill="both", expand=True)
    images.append(ImageTk.PhotoImage(photo((width, height), rng)))
    canvas.create_image(0, 0, image=images[-1], anchor="nw")
    for i, name in enumerate(("Home", "Documents", "Trash", "Projects", "Terminal")):
        canvas.create_rectangle(24, 24 + 90 * i, 72, 72 + 90 * i, fill="#3a6ea5", outline="white")
        canvas.create_text(48, 84 + 90 * i, text=name, fill="white")

    bar = window("panel", 0, 1 - 32 / height, 1, 32 / height, "dock")
    bar.configure(bg="#2b2b2b")
    for name in ("Menu", "Editor", "Files", "Settings", "Browser"):
        tk.Button(bar, text=name, bg="#3c3c3c", fg="white", relief="flat").pack(side="left", padx=2)
    tk.Label(bar, text="Tue 14:32", bg="#2b2b2b", fg="white").pack(side="right", padx=8)

    dialog = window("Preferences", 0.6, 0.05, 0.3, 0.3)
    for i, label in enumerate(("Name", "Email", "Server", "Port")):
        tk.Label(dialog, text=label + ":").grid(row=i, column=0, sticky="e", padx=6, pady=4)
        entry = tk.Entry(dialog)
        entry.insert(0, f"value {i}")
        entry.grid(row=i, column=1, padx=6)
    tk.Button(dialog, text="Cancel").grid(row=5, column=0, pady=8)
    tk.Button(dialog, text="OK").grid(row=5, column=1)

    browser = window("News - Browser", 0.25, 0.35, 0.55, 0.55)
    tk.Entry(browser).pack(fill="x")
    body = tk.Frame(browser, bg="white")
    body.pack(fill="both", expand=True)
    images.append(ImageTk.PhotoImage(photo((int(width * 0.18), int(height * 0.2)), rng)))
    tk.Label(body, image=images[-1], bg="white").pack(side="left", anchor="n", padx=10, pady=10)
    text = "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(60)) for _ in range(4))
    tk.Message(body, width=int(width * 0.33), bg="white", font=("DejaVu Serif", 11), text=text).pack(side="left")

    files = window("Files - /home/user/projects", 0.45, 0.12, 0.42, 0.5)
    tree = ttk.Treeview(files, columns=("size", "modified"))
    tree.pack(fill="both", expand=True)
    for i in range(60):
        tree.insert(
            "",
            "end",
            text=f"{rng.choice(['report', 'notes', 'draft', 'data'])}_{i:03d}.txt",
            values=(f"{rng.randrange(1, 9999)} KB", f"2024-0{rng.randrange(1, 9)}-{rng.randrange(10, 28)}"),
        )

    editor = window("loop.py - Editor", 0.05, 0.06, 0.5, 0.62)
    source = tk.Text(editor, font=("DejaVu Sans Mono", 10))
    source.pack(fill="both", expand=True)
    source.insert("1.0", "\n".join(code_lines()))
    return images


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m agent.bench.desktop_app",
        description="Show the bench desktop as real Tk windows on DISPLAY; prints 'ready' once they are built.",
    )
    parser.add_argument("width", type=int, help="the screen's width in pixels")
    parser.add_argument("height", type=int, help="the screen's height in pixels")
    args = parser.parse_args(argv)
    root = tk.Tk()
    root.withdraw()
    images = build(root, args.width, args.height)
    root.after(300, lambda: print("ready", flush=True))
    root.mainloop()
    del images  # held until here: Tk shows an image only while Python holds a reference to it


if __name__ == "__main__":
    main()
