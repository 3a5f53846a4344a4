"""Run settings: one frozen model, the provider presets, and where the API key comes from.

The key is held as a ``pydantic.SecretStr``: it never appears in ``repr``, in a
recording header (``Settings.public()``), or in a log line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agent.errors import UsageError

Protocol = Literal["auto", "tools", "text"]
DEFAULT_IMAGE_TOKENS = 2700  # about what a 1920x1080 screenshot costs (2,691)
PNG_LEVEL = 1  # zlib level for png: see agent.image.encode_image for the measurements
JPEG_QUALITY = 90
DEFAULT_IMAGE_ENCODING = "jpeg:90"  # measured: 13x faster than PNG at 1080p, 3x smaller, same tokens


@dataclass(frozen=True)
class Provider:
    """How one OpenAI-compatible provider serves GLM-4.5V."""

    name: str
    base_url: str
    model: str
    key_env: str | None  # the provider's own key variable; None: no key needed
    thinking_style: str  # siliconflow | zai | openrouter | vllm | none
    price_in: float  # USD per million input tokens
    price_out: float  # USD per million output tokens
    image_detail: str | None = None  # sent as image_url.detail when set


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider(
            "siliconflow",
            "https://api.siliconflow.com/v1",
            "zai-org/GLM-4.5V",
            "SILICONFLOW_API_KEY",
            "siliconflow",
            0.14,
            0.86,
            image_detail="high",
        ),
        Provider("zai", "https://api.z.ai/api/paas/v4", "glm-4.5v", "ZAI_API_KEY", "zai", 0.6, 1.8),
        Provider("bigmodel", "https://open.bigmodel.cn/api/paas/v4", "glm-4.5v", "BIGMODEL_API_KEY", "zai", 0.6, 1.8),
        Provider(
            "openrouter",
            "https://openrouter.ai/api/v1",
            "z-ai/glm-4.5v",
            "OPENROUTER_API_KEY",
            "openrouter",
            0.48,
            1.44,
        ),
        Provider("vllm", "http://localhost:8000/v1", "zai-org/GLM-4.5V", None, "vllm", 0.0, 0.0),
        Provider("openai", "http://localhost:8000/v1", "glm-4.5v", "OPENAI_API_KEY", "none", 0.0, 0.0),
    )
}


def parse_encoding(encoding: str) -> tuple[str, int]:
    """``png``, ``png:LEVEL`` (zlib 0-9), ``jpeg`` or ``jpeg:QUALITY`` (1-95) -> (format, parameter)."""
    name, _, value = encoding.partition(":")
    defaults = {"png": (PNG_LEVEL, range(0, 10)), "jpeg": (JPEG_QUALITY, range(1, 96))}
    if name not in defaults:
        raise UsageError(f"unknown image encoding {encoding!r}: use png[:LEVEL] or jpeg[:QUALITY]")
    default, allowed = defaults[name]
    try:
        number = int(value) if value else default
    except ValueError:
        number = -1
    if number not in allowed:
        raise UsageError(f"bad image encoding {encoding!r}: png takes a level 0-9, jpeg a quality 1-95")
    return name, number


class Settings(BaseModel):
    """Everything one run needs to know. Frozen; build it with ``Settings.resolve``."""

    model_config = ConfigDict(frozen=True)

    provider: str = "siliconflow"
    base_url: str
    model: str
    api_key: SecretStr | None = None
    thinking: bool = False
    thinking_budget: int | None = None
    protocol: Protocol = "auto"
    max_tokens: int = 8192
    temperature: float = 0.01  # "about 0"; Z.ai / BigModel reject exactly 0
    monitor: int = 1
    max_steps: int = Field(30, ge=1)
    max_image_tokens: int = Field(DEFAULT_IMAGE_TOKENS, ge=64)
    history_images: int = Field(4, ge=0)
    image_encoding: str = DEFAULT_IMAGE_ENCODING
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    max_retries: int = 4  # transport retries per request (connection errors, 429, 5xx)
    stream: bool = False  # ask for server-sent events (the CLI's --stream, on by default there)
    price_in: float = 0.0
    price_out: float = 0.0

    @property
    def preset(self) -> Provider:
        return PROVIDERS[self.provider]

    @classmethod
    def resolve(
        cls,
        provider: str = "siliconflow",
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
        require_key: bool = True,
        **overrides: Any,
    ) -> Settings:
        """Settings from a preset, explicit flags and the environment (flags win).

        Key order: ``api_key``, then DESKPILOT_API_KEY, then the provider's own variable.
        With ``require_key`` a missing key raises UsageError naming the variable to set.
        """
        environ: Mapping[str, str] = os.environ if env is None else env
        if provider not in PROVIDERS:
            raise UsageError(f"unknown provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
        preset = PROVIDERS[provider]
        key = api_key or environ.get("DESKPILOT_API_KEY") or (environ.get(preset.key_env) if preset.key_env else None)
        if require_key and not key and preset.key_env is not None and provider != "openai":
            raise UsageError(
                f"no API key for {provider}: set {preset.key_env} (or DESKPILOT_API_KEY), or pass --api-key"
            )
        url = (base_url or preset.base_url).rstrip("/")
        if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
            raise UsageError(
                f"bad base URL {url!r}: it must start with http:// or https://, e.g. http://localhost:8000/v1"
            )
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "image_encoding" in overrides:
            parse_encoding(overrides["image_encoding"])  # a bad one is a UsageError now, not mid-run
        overrides.setdefault("price_in", preset.price_in)
        overrides.setdefault("price_out", preset.price_out)
        return cls(
            provider=provider,
            base_url=url,
            model=model or preset.model,
            api_key=SecretStr(key) if key else None,
            **overrides,
        )

    def public(self) -> dict[str, Any]:
        """The settings safe to record: everything but the key."""
        data = self.model_dump(exclude={"api_key"})
        data["api_key_set"] = self.api_key is not None
        preset = self.preset
        same = (preset.price_in, preset.price_out) == (self.price_in, self.price_out)
        data["price_source"] = f"preset {preset.name}" if same else "override"
        return data

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Estimated USD for one request from the provider's price table."""
        return (prompt_tokens * self.price_in + completion_tokens * self.price_out) / 1_000_000
