"""Prompt templates as files, rendered with string.Template.substitute (see agent.protocol)."""

from __future__ import annotations

import functools
from importlib import resources
from string import Template


@functools.cache
def _template(name: str) -> Template:
    """prompts/NAME.md, read once a process (a step renders several prompts)."""
    return Template(resources.files(__name__).joinpath(f"{name}.md").read_text(encoding="utf-8"))


def render(name: str, **values: object) -> str:
    """Render prompts/NAME.md; a missing variable raises KeyError (never a silent blank)."""
    return _template(name).substitute({k: str(v) for k, v in values.items()})
