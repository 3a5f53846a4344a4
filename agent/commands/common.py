"""What every command shares: the parser class, the model flags (declared once), and the console.

* ``Parser``: argparse that exits 2 on bad input, with the one exit-code table as epilog.
* ``add_model_arguments`` / ``settings_from_args``: the provider and model flags, used by
  ``run`` and ``replay --heal``; with ``recorded`` the defaults come from a recording's header.
* ``Console``: the only way a command prints. Every line is scrubbed of secrets and the API
  key, then passed through ``agent.text.printable`` (control characters made visible), so no
  model-derived text can rewrite the terminal. In JSON mode (``--json``) its lines go to
  stderr and ``emit`` writes one JSON object a line (JSON Lines) to stdout, scrubbed too.
  ``Console.ask`` puts the model's question to the person at the terminal and reads their answer.
  ``Console.logging()`` shows the ``deskpilot`` logger's lines (the API's notices) through it.
  ``Console.status`` redraws one live line (the model's thought as it streams) on a terminal only.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TextIO

from agent.argtypes import image_token_budget, nonneg_int, positive_float, positive_int
from agent.config import DEFAULT_IMAGE_ENCODING, DEFAULT_IMAGE_TOKENS, PROVIDERS, Settings
from agent.errors import EXIT_USAGE, exit_codes_help
from agent.text import printable


class Parser(argparse.ArgumentParser):
    """argparse with deskpilot's exit code for bad usage and its exit-code table as epilog."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("epilog", exit_codes_help())
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"deskpilot: error: {printable(message)}\n")


class Console:
    """Prints lines for a person: secrets scrubbed, control characters visible.

    ``json``: JSON mode, where stdout holds only ``emit``'s JSON Lines and every line for a
    person goes to stderr."""

    def __init__(
        self, scrub: Callable[[str], str] | None = None, out: TextIO | None = None, inp: TextIO | None = None
    ) -> None:
        self.scrub = scrub or (lambda text: text)
        self.out = out
        self.inp = inp
        self.json = False
        self._lock = threading.Lock()  # an early action's log and the live line come from two threads
        self._status_at = 0.0  # when the live line was last drawn (0: not on screen)

    def say(self, line: str, *, err: bool = False) -> None:
        """Print one line (a line break inside it is shown as \\n, never obeyed)."""
        stream = sys.stderr if err or self.json else (self.out or sys.stdout)
        with self._lock:
            self._clear_status()
            print(printable(self.scrub(line)), file=stream, flush=True)

    def status(self, text: str) -> None:
        """Redraw the live line with the end of ``text`` (scrubbed, printable, one line, cut to the
        terminal's width); at most 20 times a second; nothing in JSON mode or when stdout is not a terminal."""
        stream = self.out or sys.stdout
        now = time.monotonic()
        if self.json or now - self._status_at < 0.05 or not stream.isatty():
            return
        width = max(20, shutil.get_terminal_size().columns - 1)
        tail = " ".join(self.scrub(text[-2000:]).split())  # scrubbed wide, then cut: no half secret shows
        line = printable(tail)[-(width - 4) :]
        with self._lock:
            stream.write("\r\x1b[K... " + line)
            stream.flush()
            self._status_at = now

    def _clear_status(self) -> None:
        if self._status_at:
            stream = self.out or sys.stdout
            stream.write("\r\x1b[K")
            self._status_at = 0.0

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Write ``{"event": event, **data}`` as one line of JSON to stdout. Non-ASCII and
        control characters are \\u escapes (nothing can rewrite a terminal), and secrets are
        scrubbed in every escaped form, as in a recording."""
        line = json.dumps({"event": event, **data}, ensure_ascii=True)
        print(self.scrub(line), file=self.out or sys.stdout, flush=True)

    @contextmanager
    def logging(self, name: str = "deskpilot") -> Iterator[None]:
        """Show the lines of logger ``name`` (the API's notices; warnings on stderr) while inside."""
        console = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                console.say(record.getMessage(), err=record.levelno >= logging.WARNING)

        log = logging.getLogger(name)
        handler, saved = Handler(logging.INFO), (log.level, log.propagate)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
        try:
            yield
        finally:
            log.removeHandler(handler)
            log.setLevel(saved[0])
            log.propagate = saved[1]

    def ask(self, question: str, who: str = "the model asks") -> str | None:
        """Show the model's question (or ``who`` else asks) and read one line of answer (None: end of input)."""
        self.say(f"deskpilot: {who}: {question}")
        prompt_to = sys.stderr if self.json else (self.out or sys.stdout)  # JSON mode: stdout is JSON only
        print("your answer (Enter sends it, Ctrl-D gives none): ", end="", file=prompt_to, flush=True)
        line = (self.inp or sys.stdin).readline()
        return line.rstrip("\r\n") if line else None


def add_model_arguments(parser: argparse.ArgumentParser, *, recorded: bool = False) -> None:
    """The model flags. ``recorded``: every default is "as recorded" (replay --heal)."""
    as_recorded = " (default: the recorded one)" if recorded else ""
    model = parser.add_argument_group("model" + (" (--heal)" if recorded else ""))
    model.add_argument(
        "--provider",
        choices=list(PROVIDERS),
        default=None if recorded else "siliconflow",
        help="provider preset: base URL, model id, thinking switch, key variable"
        + (as_recorded or " (default: siliconflow)"),
    )
    model.add_argument("--base-url", help="OpenAI-compatible base URL (overrides the preset)" + as_recorded)
    model.add_argument("--model", help="model id (overrides the preset)" + as_recorded)
    model.add_argument(
        "--api-key",
        help="API key (default: DESKPILOT_API_KEY, then the provider's own variable such as SILICONFLOW_API_KEY)",
    )
    model.add_argument(
        "--protocol",
        choices=["auto", "tools", "text"],
        default=None if recorded else "auto",
        help="auto: send tools and accept every text shape; tools: tool calling; text: the trained text format only"
        + (as_recorded or " (default: auto)"),
    )
    model.add_argument(
        "--thinking",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let the model think before answering (slower, costlier; default: off, on when --thinking-budget "
        "is given)" + as_recorded,
    )
    model.add_argument(
        "--thinking-budget",
        type=positive_int,
        metavar="N",
        help="thinking token budget, for SiliconFlow (128-32768) and OpenRouter",
    )
    model.add_argument(
        "--max-image-tokens",
        type=image_token_budget,
        default=None if recorded else DEFAULT_IMAGE_TOKENS,
        metavar="N",
        help=f"downscale screenshots to cost at most N visual tokens (64-6144; default: {DEFAULT_IMAGE_TOKENS})"
        + as_recorded,
    )
    model.add_argument(
        "--image-encoding",
        default=None if recorded else DEFAULT_IMAGE_ENCODING,
        metavar="ENC",
        help="how screenshots are sent: jpeg[:QUALITY] or png[:LEVEL] (default: jpeg:90); "
        "recordings always keep the lossless capture" + as_recorded,
    )
    model.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stream replies: show the thought as it comes and act as soon as the action is complete (default: on)",
    )
    model.add_argument(
        "--retries",
        type=nonneg_int,
        default=4,
        metavar="N",
        help="retries of a failed request (connection error, timeout, 429, 5xx, malformed reply) "
        "with exponential backoff (default: 4)",
    )
    model.add_argument(
        "--timeout",
        type=positive_float,
        default=120.0,
        metavar="SECONDS",
        help="the longest one request may take, reply included (default: 120)",
    )
    model.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait to connect to the endpoint (default: 10)",
    )


def settings_from_args(args: argparse.Namespace, recorded: dict[str, Any] | None = None, **extra: Any) -> Settings:
    """Settings from the model flags, through the API's ``Options`` (one mapping from flags to
    settings); ``recorded`` (a header's settings) fills what was not given."""
    from agent.api import Options

    recorded = recorded or {}
    provider = args.provider or recorded.get("provider") or "siliconflow"
    same = provider == recorded.get("provider")

    def pick(flag: Any, name: str) -> Any:
        return flag if flag is not None else recorded.get(name)

    thinking = args.thinking if args.thinking is not None else (True if args.thinking_budget is not None else None)
    given = {
        "provider": provider,
        "base_url": args.base_url or (recorded.get("base_url") if same else None),
        "model": args.model or (recorded.get("model") if same else None),
        "api_key": args.api_key,
        "thinking": pick(thinking, "thinking"),
        "thinking_budget": pick(args.thinking_budget, "thinking_budget"),
        "protocol": pick(args.protocol, "protocol"),
        "max_image_tokens": pick(args.max_image_tokens, "max_image_tokens"),
        "image_encoding": pick(args.image_encoding, "image_encoding"),
        "retries": args.retries,
        "timeout": args.timeout,
        "connect_timeout": args.connect_timeout,
        "stream": args.stream,
        **extra,
    }
    return Options.make(**{name: value for name, value in given.items() if value is not None}).settings()
