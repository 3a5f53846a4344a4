"""The Python API: run deskpilot tasks from another program, with every safety of the CLI.

    from agent import run_task

    result = run_task("Rename report.txt to final.txt", provider="zai", on_step=print)
    print(result.outcome.status, result.outcome.answer, result.recording)

``Options`` holds every setting of ``deskpilot run``: one keyword per flag, with the flag's
name (``--max-steps`` is ``max_steps``) and default. ``Agent`` builds from them the seams a
run needs (the screen: ``MssScreen``, ``ImageScreen`` or a ``--window`` scope; the
``GLMPlanner`` and its HTTP connection; the executor: ``PyAutoGuiExecutor`` or
``DryRunExecutor``; the kill switch; the settle check) and keeps them for several tasks
until ``close()``. ``Agent.run(task)`` adds what belongs to one task (its secrets, the
approval gate, its recording) and calls ``agent.loop.run_episode``. ``run_task`` is one
Agent for one task. The ``run`` command and the MCP server are built on this module.

The same safety as the CLI:

* the takeover hotkey lets the person have the desktop between steps (recorded as a human step);
* the kill hotkey (Esc three times by default) stops the task at once; the Agent then
  refuses to act again (build a new one to go on). It interrupts a blocking model request
  only when the task runs in the main thread (by SIGINT, as the CLI does); in any other
  thread the task stops before its next action or typed character;
* budgets (``max_steps``, ``max_time``, ``max_cost``);
* approvals: ``approve`` is asked before an action runs whenever the CLI would ask (every
  action with ``confirm``; a risky key combination always). It returns ``"approve"``,
  ``"skip"``, ``"quit"`` or an Action to run instead; without it the terminal asks;
* secrets: ``{{secret:NAME}}`` in a task is typed from DESKPILOT_SECRET_NAME, and neither it
  nor the API key reaches a recording, a log line or an error message;
* the window scope (``window``);
* recovery from an imperfect model: ``zoom`` (auto, always, off) re-grounds a click on a
  zoomed-in crop, and a run going round in a loop is told, zoomed, then ends ``stuck``
  (or, with ``on_stuck``, asks the person; see agent.loop.Recovery).

Errors are raised as ``agent.errors`` exceptions (``UsageError`` for bad options,
``EndpointError``, ``Interrupted``...); one raised during a task carries the task so far as
``exc.result`` (an EpisodeResult with its outcome and recording). Lines for a person (the
window chosen, how to stop, dry-run actions, a display warning) go to the ``deskpilot``
logger; nothing is printed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from actions.executor import DryRunExecutor, Executor, PointScreen
from actions.schema import ACTION_TYPES, Action
from agent.capture import ImageScreen, MssScreen, Screen
from agent.config import DEFAULT_IMAGE_ENCODING, DEFAULT_IMAGE_TOKENS, Settings
from agent.display import display_warning
from agent.errors import DeskpilotError, Interrupted, UsageError
from agent.loop import Approve, AskUser, EpisodeResult, Limits, Recorder, Recovery, Refuse, run_episode
from agent.planner import GLMPlanner
from agent.safety import (
    DEFAULT_ALWAYS_CONFIRM,
    DEFAULT_KILL_HOTKEY,
    DEFAULT_TAKEOVER_HOTKEY,
    Approver,
    Decision,
    KillSwitch,
    Secrets,
    SecretTypingExecutor,
    Takeover,
    describe_hotkey,
    parse_risky_combos,
)
from agent.settle import AdaptiveSettle, SettleConfig
from agent.trajectory import JsonlRecorder, Step
from agent.zoom import ZoomMode

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from agent.window import WindowScope

logger = logging.getLogger("deskpilot")

Verdict = Literal["approve", "skip", "quit"]
ApproveCallback = Callable[[Action, list[PointScreen]], Union[Verdict, Action, Decision]]
"""Asked before an action runs: ``approve(action, points_screen)``; returns a verdict, or the
Action to run instead (an edit, in model space like the model's), or a ``Decision``."""

_Positive = Annotated[int, Field(ge=1)]
_NonNegative = Annotated[int, Field(ge=0)]
_PositiveFloat = Annotated[float, Field(gt=0)]
_Price = Annotated[float, Field(ge=0)]


class Options(BaseModel):
    """Every setting of ``deskpilot run``, by the flag's name (see ``deskpilot run --help``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # model
    provider: str = "siliconflow"
    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None  # default: DESKPILOT_API_KEY, then the provider's variable
    protocol: Literal["auto", "tools", "text"] = "auto"
    thinking: bool | None = None  # default: off, on when thinking_budget is given
    thinking_budget: _Positive | None = None
    max_image_tokens: int = DEFAULT_IMAGE_TOKENS
    image_encoding: str = DEFAULT_IMAGE_ENCODING
    retries: _NonNegative = 4
    timeout: _PositiveFloat = 120.0
    connect_timeout: _PositiveFloat = 10.0
    stream: bool = True  # stream replies: act as soon as the action is complete
    # screen and input
    monitor: _NonNegative = 1
    window: str | None = None  # class:NAME, title:TEXT, id:0x..., or a substring of either
    dry_run: bool = False
    screens: Path | list[Path] | None = None  # mocked screens; implies dry_run
    settle_max: _PositiveFloat = 2.0
    settle_quiet: _PositiveFloat = 0.08
    zoom: ZoomMode = "auto"  # re-ground clicks on a zoomed-in crop: auto, always, off
    # limits and output
    max_steps: _Positive = 30
    max_time: _PositiveFloat | None = None
    max_cost: _PositiveFloat | None = None
    price_in: _Price | None = None
    price_out: _Price | None = None
    recordings: Path | None = Path("recordings")  # None: do not record
    # safety
    kill_hotkey: str = DEFAULT_KILL_HOTKEY
    takeover_hotkey: str = DEFAULT_TAKEOVER_HOTKEY  # "none": off
    confirm: bool = False
    no_ask: bool = False  # never offer the model call_user, even with an ``ask`` callback
    always_confirm: str | tuple[str, ...] = ",".join(DEFAULT_ALWAYS_CONFIRM)

    @classmethod
    def make(cls, options: Options | None = None, **overrides: Any) -> Options:
        """``options`` with ``overrides`` applied; a bad or unknown one is a UsageError naming it."""
        data = {**(options.model_dump() if options is not None else {}), **overrides}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(p) for p in first["loc"]) or "options"
            if first["type"] == "extra_forbidden":
                raise UsageError(f"unknown option {name!r}; the options are: {', '.join(cls.model_fields)}") from None
            raise UsageError(f"bad option {name}: {first['msg']}") from None

    def settings(self) -> Settings:
        """The run's Settings (UsageError for a missing key, a bad URL or encoding)."""
        thinking = self.thinking if self.thinking is not None else (self.thinking_budget is not None or None)
        try:
            return Settings.resolve(
                self.provider,
                base_url=self.base_url,
                model=self.model,
                api_key=self.api_key.get_secret_value() if self.api_key is not None else None,
                thinking=thinking,
                thinking_budget=self.thinking_budget,
                protocol=self.protocol,
                max_image_tokens=self.max_image_tokens,
                image_encoding=self.image_encoding,
                max_retries=self.retries,
                read_timeout=self.timeout,
                connect_timeout=self.connect_timeout,
                stream=self.stream,
                monitor=self.monitor,
                max_steps=self.max_steps,
                price_in=self.price_in,
                price_out=self.price_out,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            raise UsageError(f"bad option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None

    def limits(self) -> Limits:
        return Limits(max_steps=self.max_steps, max_time_s=self.max_time, max_cost_usd=self.max_cost)


class OptionFields(TypedDict, total=False):
    """``Options`` as keyword arguments (for type checkers; the test suite keeps the two equal)."""

    provider: str
    base_url: str | None
    model: str | None
    api_key: str | SecretStr | None
    protocol: Literal["auto", "tools", "text"]
    thinking: bool | None
    thinking_budget: int | None
    max_image_tokens: int
    image_encoding: str
    retries: int
    timeout: float
    connect_timeout: float
    stream: bool
    monitor: int
    window: str | None
    dry_run: bool
    screens: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None
    settle_max: float
    settle_quiet: float
    zoom: ZoomMode
    max_steps: int
    max_time: float | None
    max_cost: float | None
    price_in: float | None
    price_out: float | None
    recordings: str | os.PathLike[str] | None
    kill_hotkey: str
    takeover_hotkey: str
    confirm: bool
    no_ask: bool
    always_confirm: str | Sequence[str]


def to_decision(answer: Any, action: Action) -> Decision:
    """An approval callback's answer as a Decision (UsageError for anything else)."""
    if isinstance(answer, Decision):
        return answer
    if answer == "approve":
        return Decision("approve", action)
    if answer in ("skip", "quit"):
        return Decision(answer)
    if isinstance(answer, tuple(ACTION_TYPES.values())):
        return Decision("approve", answer)  # type: ignore[arg-type]
    raise UsageError(
        f"the approval callback returned {type(answer).__name__}: return 'approve', 'skip', 'quit' or an Action"
    )


def approval_gate(
    approve: ApproveCallback | Approver | None,
    confirm: bool,
    always_confirm: str | Sequence[str],
    scrub: Callable[[str], str] | None = None,
) -> Approve:
    """The approval gate of a run. An ``Approver`` decides itself when to ask; a callback is
    asked when an Approver would ask (every action with ``confirm``, risky key combinations
    always); without either, the terminal asks."""
    if isinstance(approve, Approver):
        return approve
    rules = Approver(confirm, always_confirm, scrub=scrub)
    if approve is None:
        return rules
    callback = approve

    def gate(action: Action, points_screen: list[PointScreen]) -> Decision:
        if not rules.needs_approval(action):
            return Decision("approve", action)
        return to_decision(callback(action, list(points_screen)), action)

    return gate


class _Stoppable:
    """An executor that refuses to act once the kill switch has fired (a reply that arrives
    after the hotkey was pressed is never performed)."""

    def __init__(self, inner: Executor, stop_event: threading.Event) -> None:
        self.inner, self.stop_event = inner, stop_event

    def execute(self, action: Action, points_screen: list[PointScreen]) -> None:
        if self.stop_event.is_set():
            raise Interrupted("stopped by the kill hotkey")
        self.inner.execute(action, points_screen)


class Agent:
    """The seams of a run, built from Options and kept for several tasks; a context manager.

    Attributes for code built on it (the CLI, the MCP server): ``options``, ``settings``,
    ``dry_run``, ``screen``, ``planner``, ``executor`` (no secret expansion: see ``run``),
    ``settle`` (None in a dry run), ``scope`` (the WindowScope or None), ``refuse`` (the
    scope's gate or None), ``stop_event`` (set by the kill hotkey; None without one), ``takeover``.
    """

    def __init__(self, options: Options | None = None, /, **overrides: Unpack[OptionFields]) -> None:
        self.options = Options.make(options, **overrides)
        self.settings = self.options.settings()
        parse_risky_combos(self.options.always_confirm)  # a bad entry fails now, not at the first key
        self._key = [self.settings.api_key.get_secret_value()] if self.settings.api_key else []
        self.dry_run = self.options.dry_run or self.options.screens is not None
        self._running: threading.Thread | None = None
        self._closed = False
        self._stack = ExitStack()
        try:
            self._build()
        except BaseException:
            self._stack.close()
            raise

    def _build(self) -> None:
        o, stack = self.options, self._stack
        self.scope: WindowScope | None = None
        self.screen: Screen
        if o.screens is not None:
            self.screen = ImageScreen(o.screens)
        elif o.window:
            from agent.window import WindowScope

            self.scope = scope = stack.enter_context(WindowScope(o.window))
            if scope.notice:
                logger.info(f"deskpilot: {scope.notice}")
            window_screen = scope.screen(o.monitor)
            stack.callback(window_screen.close)
            self.screen = window_screen
        else:
            live_screen = MssScreen(o.monitor)
            stack.callback(live_screen.close)
            self.screen = live_screen
        self.refuse: Refuse | None = None
        if self.scope is not None:
            scope = self.scope
            self.refuse = lambda action, points: scope.refuse(action.kind, points)
        self.stop_event: threading.Event | None = None
        self.takeover: Takeover | None = None
        if o.screens is None:
            kill_switch = KillSwitch(o.kill_hotkey, on_fire=self._interrupt).start()
            stack.callback(kill_switch.stop)
            self.stop_event = kill_switch.stop_event
            if o.takeover_hotkey.strip().lower() != "none":
                self.takeover = Takeover(o.takeover_hotkey, say=logger.info, stop_event=self.stop_event).start()
                stack.callback(self.takeover.stop)
        self.executor: Executor
        if self.dry_run:
            self.executor = DryRunExecutor(log=logger.info)
        else:
            from actions.pyautogui_executor import PyAutoGuiExecutor

            stop = self.stop_event
            live = PyAutoGuiExecutor(should_stop=stop.is_set if stop is not None else None)
            stack.callback(live.close)  # undo the keymap bindings made for typing
            self.executor = _Stoppable(live, stop) if stop is not None else live
        self.planner = GLMPlanner(self.settings, stop_event=self.stop_event, scrub=Secrets({}, self._key).scrub)
        stack.callback(self.planner.close)
        self.settle: AdaptiveSettle | None = None
        if not self.dry_run:
            config = SettleConfig(quiet_s=o.settle_quiet, max_s=o.settle_max)
            ahead = (self.settings.max_image_tokens, self.settings.image_encoding)  # prepare a final-looking frame
            self.settle = AdaptiveSettle.for_screen(self.screen, config, ahead=ahead)
        if o.screens is None:
            warning = display_warning()
            if warning:
                logger.warning(f"deskpilot: warning: {warning}")
        if self.stop_event is not None:
            logger.info(
                f"deskpilot: stop with {describe_hotkey(o.kill_hotkey)} (in any window), Ctrl-C in the terminal, "
                "or throw the mouse into a screen corner"
            )
        if self.takeover is not None:
            hotkey = describe_hotkey(o.takeover_hotkey)
            logger.info(
                f"deskpilot: take the desktop over with {hotkey} (in any window), {hotkey} again to hand it back"
            )

    def _interrupt(self) -> None:
        """The kill hotkey fired (its stop event is set): a task blocked in the main thread is
        interrupted like Ctrl-C; a task in another thread stops at its next check."""
        if self._running is threading.main_thread():
            os.kill(os.getpid(), signal.SIGINT)

    def secrets(self, task: str) -> Secrets:
        """The task's {{secret:NAME}} values (UsageError when one is not set), and the API key."""
        return Secrets.from_task(task, extra=self._key)

    def recorder(
        self, task: str, scrub: Callable[[str], str] | None = None, mode: str | None = None
    ) -> JsonlRecorder | None:
        """A new recording for ``task`` under ``options.recordings`` (None when recording is off).

        ``scrub``: what keeps secrets out of it (default: the task's secrets and the key)."""
        if self.options.recordings is None:
            return None
        public = {
            **self.settings.public(),
            "model_retries": self.options.limits().model_retries,
            "zoom": self.options.zoom,  # replay simulate zooms where the run did
        }
        return JsonlRecorder(
            self.options.recordings,
            task,
            public,
            mode=mode or ("dry-run" if self.dry_run else "run"),
            scrub=scrub or self.secrets(task).scrub,
            window=self.scope.describe() if self.scope else None,
        )

    def run(
        self,
        task: str,
        *,
        on_step: Callable[[Step], None] | None = None,
        approve: ApproveCallback | Approver | None = None,
        ask: AskUser | None = None,
        refuse: Refuse | None = None,
        limits: Limits | None = None,
        recorder: Recorder | None = None,
        on_stuck: Callable[[Step, str], str | None] | None = None,
    ) -> EpisodeResult:
        """Perform ``task`` to its end and return how it ended, its steps and its recording.

        ``on_step(step)``: after each step is recorded. ``approve``: see ``ApproveCallback``.
        ``ask(question) -> answer or None``: offers the model call_user (a question to the
        person; not with ``no_ask``); without it a question ends the task as ``fail``.
        ``refuse(action, points_screen)``: a policy that may refuse an action (return the
        reason, which is recorded and shown to the model), asked before the window scope.
        ``limits``: other budgets than the options'. ``recorder``: where to record (default: a
        new recording, see ``recorder()``). ``on_stuck(step, message) -> advice or None``: asked
        when the task is stuck in a loop that telling the model and zooming did not break; the
        advice goes to the model and the task goes on, None ends it ``stuck`` (the default).
        """
        if self._closed:
            raise UsageError("this Agent is closed: build a new one")
        secrets = self.secrets(task)
        executor = self.executor if self.dry_run else SecretTypingExecutor(self.executor, secrets)
        if recorder is None:
            recorder = self.recorder(task, secrets.scrub)
        path = getattr(recorder, "path", None)
        gate = approval_gate(approve, self.options.confirm, self.options.always_confirm, secrets.scrub)
        checks = [check for check in (refuse, self.refuse) if check is not None]

        def refusal(action: Action, points_screen: list[PointScreen]) -> str | None:
            return next((r for check in checks if (r := check(action, points_screen)) is not None), None)

        self._running = threading.current_thread()
        try:
            result = run_episode(
                task,
                screen=self.screen,
                planner=self.planner,
                executor=executor,
                settings=self.settings,
                limits=limits or self.options.limits(),
                recorder=recorder,
                on_step=on_step,
                settle=self.settle,
                stop_event=self.stop_event,
                approve=gate,
                refuse=refusal if checks else None,
                ask_user=None if self.options.no_ask else ask,
                takeover=self.takeover,
                recovery=Recovery(zoom=self.options.zoom, on_stuck=on_stuck),
            )
        except DeskpilotError as exc:
            if isinstance(exc.result, EpisodeResult):
                exc.result.recording = path
            raise
        finally:
            self._running = None
        result.recording = path
        return result

    def close(self) -> None:
        """Stop the kill switch, close the screen, the connection and the window scope."""
        self._closed = True
        self._stack.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_task(
    task: str,
    *,
    on_step: Callable[[Step], None] | None = None,
    approve: ApproveCallback | Approver | None = None,
    ask: AskUser | None = None,
    **options: Unpack[OptionFields],
) -> EpisodeResult:
    """Perform one task with a new Agent built from ``options`` (see ``Options``), then close it."""
    with Agent(**options) as agent:
        return agent.run(task, on_step=on_step, approve=approve, ask=ask)
