"""Prompt templates as files, rendered with string.Template.substitute (see agent.protocol)."""

from __future__ import annotations

from importlib import resources
from string import Template


def render(name: str, **values: object) -> str:
    """Render prompts/NAME.md; a missing variable raises KeyError (never a silent blank)."""
    text = resources.files(__name__).joinpath(f"{name}.md").read_text(encoding="utf-8")
    return Template(text).substitute({k: str(v) for k, v in values.items()})
