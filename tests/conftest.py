"""Sealed tests: no real network, no API keys from the environment, no stray recordings."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Recordings as tests (deskpilot_recordings in pyproject.toml): the plugin, unless its pytest11
# entry point (an install of the package) registered it already.
pytest_plugins = [] if "agent.pytest_plugin" in sys.modules else ["agent.pytest_plugin"]

KEY_VARIABLES = (
    "DESKPILOT_API_KEY",
    "SILICONFLOW_API_KEY",
    "ZAI_API_KEY",
    "BIGMODEL_API_KEY",
    "OPENROUTER_API_KEY",
    "OPENAI_API_KEY",
)
_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address):  # type: ignore[no-untyped-def]
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise OSError(f"tests may not reach the network ({host}); use the fake server on 127.0.0.1")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def sealed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
    monkeypatch.chdir(tmp_path)  # a run that forgets --recordings writes into tmp_path


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for a deskpilot subprocess: this checkout importable, no keys."""
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env
