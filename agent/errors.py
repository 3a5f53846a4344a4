"""The exception tree of deskpilot, and the exit code each one maps to.

Two families, kept apart on purpose:

* ``ModelError``: *the model was wrong*. Its reply could not be parsed, named an
  unknown action, or pointed outside the image. These are recorded, shown back to the
  model, and retried a bounded number of times. They never reach the user as a crash.
* ``DeskpilotError``: *we (or the user's setup) were wrong*. Bad flags or configuration,
  a rejected key, an unreachable endpoint, no display. Raised with a message that says
  what to do, and turned by the CLI into a documented exit code with no traceback.

::

    Exception
     +-- ModelError                      the model's reply was unusable (retried)
     |    +-- UnparseableReply           no action could be found in the reply
     |    +-- UnknownAction              an action name outside the action space
     |    +-- InvalidArguments           arguments missing or of the wrong shape
     |    +-- CoordinateOutOfRange       a coordinate outside 0-1000 (model space)
     |    +-- EmptyReply                 no content at all (thinking ate the budget)
     |    +-- NoPoint                    a zoom answer that points at nothing (FAIL: not in the crop)
     +-- DeskpilotError                  exit_code says how the CLI ends
          +-- UsageError                 exit 2: bad flags, config, input files
          +-- DisplayError               exit 2: no display / Wayland / bad monitor
          +-- EndpointError              exit 3: the model endpoint failed
          |    +-- AuthRejected          exit 3: 401/403 from the provider
          |    +-- MalformedCompletion   exit 3: a 200 whose JSON is not a chat completion
          +-- TimeBudgetExceeded         exit 1: the run's deadline (--max-time) came first
          +-- Interrupted                exit 130: kill hotkey or Ctrl-C
"""

from __future__ import annotations

from typing import Any

EXIT_DONE = 0
EXIT_NOT_DONE = 1  # infeasible, a budget ran out, or stuck in a loop (doctor: a problem)
EXIT_USAGE = 2
EXIT_ENDPOINT = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130

# The one table of exit codes: ``--help`` of every command, replay and the README's table
# (checked by a test) all come from here.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_DONE, "the model declared the task done (replay: every step matched or was healed)"),
    (
        EXIT_NOT_DONE,
        "the model declared it infeasible or asked with no one to answer, a step/time/cost budget ran out, "
        "or it was stuck repeating actions that changed nothing (replay: a step differed; doctor: a problem "
        "was found)",
    ),
    (EXIT_USAGE, "usage or configuration error (bad flags, missing key, no display, unreadable recording, disk full)"),
    (EXIT_ENDPOINT, "the model endpoint failed (key rejected, unreachable or malformed replies after retries)"),
    (EXIT_INTERNAL, "internal error: a bug in deskpilot (set DESKPILOT_DEBUG=1 for the traceback, and report it)"),
    (EXIT_INTERRUPTED, "interrupted (kill hotkey, Ctrl-C, SIGTERM, SIGHUP, or quit at the approval prompt)"),
)


def exit_codes_help() -> str:
    """The exit-code table as an argparse epilog."""
    return "exit codes:\n" + "".join(f"  {code:<4} {meaning}\n" for code, meaning in EXIT_CODES)


class ModelError(Exception):
    """The model's reply could not be turned into an action. Shown back to the model."""


class UnparseableReply(ModelError):
    """No action call, tool call, JSON action or box was found in the reply."""


class ActionChanged(ModelError):
    """A streamed reply, once whole, does not give the action that was complete (and ran) before its end."""


class UnknownAction(ModelError):
    """The reply named an action that is not in the action space."""


class InvalidArguments(ModelError):
    """The action's arguments were missing, malformed or of the wrong type."""


class CoordinateOutOfRange(ModelError):
    """A coordinate outside 0-1000: the model space is thousandths of the sent image."""


class EmptyReply(ModelError):
    """The reply had no content (often: reasoning consumed the whole token budget)."""


class NoPoint(ModelError):
    """A zoom (grounding) answer that points at nothing: FAIL (the element is not in the
    crop) or an action without a point. The step keeps its first answer."""


class DeskpilotError(Exception):
    """Something outside the model went wrong; the message says what to do.

    ``result``: when raised out of a run (``agent.loop.run_episode``), the run so far (an
    ``EpisodeResult``: its outcome, steps and recording); otherwise None."""

    exit_code = EXIT_USAGE
    result: Any = None


class UsageError(DeskpilotError):
    """Bad command-line input, configuration or input file."""

    exit_code = EXIT_USAGE


class DisplayError(DeskpilotError):
    """No usable display: no X server, Wayland, or a monitor that does not exist."""

    exit_code = EXIT_USAGE


class EndpointError(DeskpilotError):
    """The model endpoint failed: unreachable after retries, or an HTTP error."""

    exit_code = EXIT_ENDPOINT


class AuthRejected(EndpointError):
    """The provider rejected the API key (HTTP 401 or 403)."""


class MalformedCompletion(EndpointError):
    """The endpoint answered 200, but its JSON is not a chat completion of the expected shape
    (no choices, a message that is not an object, content of an unknown type...). The planner
    retries it like a 5xx; after the retries it ends the run as an EndpointError."""


class TimeBudgetExceeded(DeskpilotError):
    """The run's deadline (``--max-time``) was reached while waiting for the model: no request,
    retry or backoff goes past it. The run ends not done (outcome ``max_time``), exit 1."""

    exit_code = EXIT_NOT_DONE


class Interrupted(DeskpilotError):
    """The run was stopped by the kill hotkey or Ctrl-C."""

    exit_code = EXIT_INTERRUPTED
