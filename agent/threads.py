"""Background threads: work nobody waits for yet runs at a lower CPU priority.

A step's critical path (the main thread acting, probing the screen until it settles and sending
the request, and the X server copying each grab) shares the cores with work done ahead of it or
behind it: the model's image of a frame that looks final, the history shot, the recorder's PNG.
At 2560x1440 on two cores that work kept both cores busy while the settle probed, and each probe's
grab waited for a core: 14 ms instead of 5. Threads made by ``background_pool`` (and any thread
that calls ``lower_priority``) run ``BACKGROUND_NICE`` steps nicer than the process, so the
scheduler gives the critical path a core first; the background work still gets every core nobody
else wants (while the settle sleeps between probes, and while the model thinks). Linux gives each
thread its own nice value; elsewhere this changes nothing.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

BACKGROUND_NICE = 10  # CFS weights: a nice-10 thread gets about a tenth of a core another thread wants


def lower_priority() -> None:
    """Make the calling thread ``BACKGROUND_NICE`` steps nicer (Linux; elsewhere nothing).
    Never fails: a priority is a hint, and a refusal (a locked-down container) changes nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        process = os.getpriority(os.PRIO_PROCESS, os.getpid())  # the main thread's: a thread made by a
        # background thread starts at that one's value, so the step is counted from the process's
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, process + BACKGROUND_NICE))
    except OSError:
        pass


def background_pool(name: str, workers: int = 1) -> ThreadPoolExecutor:
    """A thread pool whose threads run at the lower priority (named ``name``_N)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=lower_priority)
