"""Background threads run at a lower CPU priority than the step's critical path (agent.threads)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from agent.threads import BACKGROUND_NICE, background_pool, lower_priority

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_pool_threads_are_nicer_than_the_process_and_the_caller_is_left_alone():
    process = os.getpriority(os.PRIO_PROCESS, os.getpid())
    with background_pool("test-background", 2) as pool:
        values = set(pool.map(lambda _: _nice(), range(8)))
    assert values == {min(19, process + BACKGROUND_NICE)}
    assert _nice() == process


def test_a_thread_made_by_a_background_thread_is_not_lowered_twice():
    process = os.getpriority(os.PRIO_PROCESS, os.getpid())
    seen: list[int] = []

    def inner() -> None:
        lower_priority()
        seen.append(_nice())

    def outer() -> None:
        lower_priority()
        child = threading.Thread(target=inner)  # starts at this thread's nice value
        child.start()
        child.join()

    thread = threading.Thread(target=outer)
    thread.start()
    thread.join()
    assert seen == [min(19, process + BACKGROUND_NICE)]
