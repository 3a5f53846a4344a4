"""deskpilot: a desktop agent that operates a real computer with GLM-4.5V.

The package ``agent`` holds the loop and what surrounds it (screen, planner, geometry,
trajectory, CLI); ``actions`` holds what can be done to a desktop.

The Python API (``agent.api``) is importable from here, loaded on first use so that
``import agent`` stays light: ``from agent import run_task, Agent, Options, EpisodeResult``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Agent", "EpisodeResult", "Options", "run_task", "__version__"]

if TYPE_CHECKING:
    from agent.api import Agent, Options, run_task
    from agent.loop import EpisodeResult


def __getattr__(name: str) -> Any:
    if name in ("Agent", "Options", "run_task"):
        from agent import api

        return getattr(api, name)
    if name == "EpisodeResult":
        from agent.loop import EpisodeResult

        return EpisodeResult
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
