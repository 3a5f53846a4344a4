"""The desktop as an MCP server (``deskpilot mcp``): other agents see and act through deskpilot.

Tools (stdio transport, the official ``mcp`` SDK): ``screenshot``, ``locate``, ``click``,
``double_click``, ``right_click``, ``drag``, ``scroll``, ``type_text``, ``press_keys`` and
``run_task``. Pointing tools take either a ``description`` (GLM-4.5V finds the element) or
screen pixels ``x``, ``y`` (what ``locate`` returns; the same coordinates xdotool uses).

``Session`` owns one server session; the SDK wrapper (``build_server``) only turns its
methods into tools and its refusals into tool errors. The seams come from one
``agent.api.Agent``; every call passes the gates of a run:

* the kill hotkey: once pressed, every acting call is refused for the rest of the session;
* budgets: ``max_steps`` counts the steps of the session's recording (each call is one, a
  ``run_task`` one per step of its own), ``max_time`` runs from the server's start,
  ``max_cost`` adds up every model request; ``run_task(max_steps)`` is capped by what is left;
* risky key combinations (``always_confirm``) are refused unless the server was started
  with ``--allow-risky`` (there is no person to ask: stdin is the protocol);
* the ``--window`` scope refuses points outside the window and keys while it lacks focus;
* secrets: ``{{secret:NAME}}`` in ``type_text`` or a task is typed from
  DESKPILOT_SECRET_NAME and scrubbed from the recording and from every tool result.

Every call is recorded as a step of ONE recording per session (mode ``mcp``), so ``view``
shows it and ``replay`` checks it (every model reply is re-parsed and re-grounded) or
executes it again. A call by description is a one-step run of the loop whose task asks the
model for exactly that action (``grounding_task``); the step is recorded as in a run. Its
reply must be that action (a ``left_click`` for ``click``...), or the call is refused.
``locate`` is recorded as a refused step (nothing was done). Calls by pixel, ``type_text``
and ``press_keys`` involve no model: their step has no reply, and its target holds the exact
pixel (its ``box_model`` is the nearest thousandth).
"""

from __future__ import annotations

import base64
import functools
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from PIL import Image
from pydantic import Field

from actions.executor import Executor, describe
from actions.keys import combo_text
from actions.schema import ACTION_ADAPTER, Action, action_to_call, build_action
from agent.api import Agent
from agent.errors import DeskpilotError, Interrupted, ModelError, UsageError
from agent.geometry import MonitorGeometry, Target, image_to_model, image_to_screen, model_to_image, screen_to_image
from agent.image import prepare_for_model
from agent.loop import Limits, Refuse
from agent.safety import Approver, Secrets, SecretTypingExecutor
from agent.text import printable
from agent.trajectory import JsonlRecorder, Outcome, OutcomeStatus, SentInfo, Step

SESSION_TASK = "deskpilot MCP session"
CLICKS = {"click": "left_click", "double_click": "left_double_click", "right_click": "right_click"}
INSTRUCTIONS = (
    "deskpilot shows you one monitor of this desktop and acts on it with real input. Pointing tools take a "
    "description of the element (GLM-4.5V locates it) or screen pixels x, y (what locate returns). Risky key "
    "combinations, points outside the allowed window and calls after the user's kill hotkey are refused. "
    "run_task performs a whole task with the deskpilot agent."
)
Description = Annotated[str | None, Field(description="the element in words, e.g. 'the OK button of the Save dialog'")]
X = Annotated[int | None, Field(description="screen pixel x (what locate returns), instead of a description")]
Y = Annotated[int | None, Field(description="screen pixel y")]


class Refused(Exception):
    """A call that did not act; the message says why (and what to do)."""


class _SessionRecording:
    """The session's one recording, as a ``Recorder`` each call (and each run_task) writes into:
    numbers are relative to the call (1, 2...) and become the session's (the steps before it, +1...)."""

    def __init__(self, inner: JsonlRecorder | None) -> None:
        self.inner = inner
        self.path = inner.path if inner is not None else None
        self.written = 0
        self.base = 0

    def begin(self) -> None:
        """A new call starts: its step 1 follows the steps written so far."""
        self.base = self.written

    def save_screenshot(self, step: int, image: Image.Image, suffix: str = "") -> str:
        return self.inner.save_screenshot(self.base + step, image, suffix) if self.inner is not None else ""

    def write_step(self, step: Step) -> None:
        number = self.base + step.step
        if self.inner is not None:
            self.inner.write_step(step.model_copy(update={"step": number}))
        self.written = max(self.written, number)

    def finish(self, outcome: Outcome) -> None:
        """The end of one run_task is not the session's: nothing to write."""

    def close(self, outcome: Outcome) -> None:
        if self.inner is not None:
            self.inner.finish(outcome)


def grounding_task(kind: str, description: str, to: str | None = None, direction: str = "", amount: int = 0) -> str:
    """The task of a one-step run that asks the model for exactly one action on the described element."""
    box = "'[x1,y1,x2,y2]'"
    if kind == "left_drag":
        return (
            f"Drag from this element: {description}\nto this element: {to}\n"
            f"Do nothing else: answer with one left_drag(start_box={box}, end_box={box}, element_info='...') "
            "whose boxes are the bounding boxes of the two elements."
        )
    if kind == "scroll":
        call = f"scroll(start_box={box}, direction='{direction}', step={amount}, element_info='...')"
    else:
        call = f"{kind}(start_box={box}, element_info='...')"
    return (
        f"Find this element on the screenshot: {description}\n"
        f"Do nothing else: answer with one {call} whose start_box is the element's bounding box."
    )


def box_on_screen(box_model: tuple[int, ...], geometry: MonitorGeometry) -> list[int]:
    """A model-space point or box as [left, top, right, bottom] in screen pixels."""
    corners = [box_model[:2], box_model[2:4] if len(box_model) == 4 else box_model[:2]]
    return [
        v
        for x_model, y_model in corners
        for v in image_to_screen(model_to_image((x_model, y_model), geometry.size_image), geometry)
    ]


class Session:
    """One MCP server session over an Agent: the gates, the totals, the one recording.

    Every public method is a tool: it returns what the tool answers, or raises ``Refused``
    (or a DeskpilotError / ModelError) with a message for the calling agent. Calls are
    serialised: one desktop, one action at a time."""

    def __init__(self, agent: Agent, *, allow_risky: bool = False) -> None:
        self.agent = agent
        self.allow_risky = allow_risky
        self.rules = Approver(False, agent.options.always_confirm)  # which key combinations are risky
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.steps = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.cost_usd = 0.0
        self._key = [agent.settings.api_key.get_secret_value()] if agent.settings.api_key else []
        self._secret_values: dict[str, str] = {}
        self._secrets = Secrets({}, self._key)
        self.recording = _SessionRecording(agent.recorder(SESSION_TASK, self.scrub, mode="mcp"))
        self._budget_status: tuple[OutcomeStatus, str] | None = None

    # --- what every call shares ----------------------------------------------------------

    def scrub(self, text: str) -> str:
        """Every secret this session has typed, and the API key, removed."""
        return self._secrets.scrub(text)

    def clean(self, text: str) -> str:
        """A message for the calling agent: secrets scrubbed, control characters visible."""
        return printable(self.scrub(text))

    def _learn(self, text: str) -> Secrets:
        """The {{secret:NAME}} values ``text`` uses (UsageError when one is not set), kept for scrubbing."""
        secrets = Secrets.from_task(text, extra=self._key)
        if not secrets.values.keys() <= self._secret_values.keys():
            self._secret_values.update(secrets.values)
            self._secrets = Secrets(self._secret_values, self._key)
        return secrets

    def _count(self, step: Step) -> None:
        self.steps += 1
        self.prompt_tokens += step.prompt_tokens
        self.completion_tokens += step.completion_tokens
        self.cost_usd += step.cost_usd

    def _check(self) -> None:
        """Refuse any call once the kill hotkey was pressed or a budget is used up."""
        stop = self.agent.stop_event
        if stop is not None and stop.is_set():
            raise Refused("refused: deskpilot was stopped by the kill hotkey; restart the MCP server to go on")
        o = self.agent.options
        if self.steps >= o.max_steps:
            self._budget_status = ("max_steps", f"the session's step budget ({o.max_steps}) was used up")
        elif o.max_time is not None and time.monotonic() - self.started >= o.max_time:
            self._budget_status = ("max_time", f"the session's time budget ({o.max_time:g} s) ran out")
        elif o.max_cost is not None and self.cost_usd >= o.max_cost:
            self._budget_status = ("max_cost", f"the session's cost budget (${o.max_cost:g}) was reached")
        if self._budget_status is not None:
            raise Refused(f"refused: {self._budget_status[1]}; restart the MCP server with a larger budget")

    def _limits(self, max_steps: int) -> Limits:
        """The budgets of one run inside the session: what is left of the session's."""
        o = self.agent.options
        return Limits(
            max_steps=max(1, min(max_steps, o.max_steps - self.steps)),
            max_time_s=None if o.max_time is None else o.max_time - (time.monotonic() - self.started),
            max_cost_usd=None if o.max_cost is None else o.max_cost - self.cost_usd,
        )

    def _risky(self, action: Action, points_screen: list[tuple[int, int]]) -> str | None:
        combo = None if self.allow_risky else self.rules.risky_combo(action)
        if combo is None:
            return None
        return (
            f"refused: {action.keys!r} presses {combo_text(combo)}, which always needs approval; "  # type: ignore[union-attr]
            "start the server with --allow-risky to allow it"
        )

    def _run(self, task: str, refuse: Refuse, max_steps: int = 1) -> tuple[Step | None, Outcome, Any]:
        """A run of the loop inside the session; returns its last step, its outcome and its recording."""
        self._learn(task)
        self.recording.begin()
        try:
            result = self.agent.run(
                task,
                on_step=self._count,
                approve=lambda action, points: "approve",  # only asked after _risky let it through
                refuse=refuse,
                limits=self._limits(max_steps),
                recorder=self.recording,
            )
        except DeskpilotError as exc:
            raise Refused(f"{'stopped' if isinstance(exc, Interrupted) else 'error'}: {exc}") from None
        return (result.steps[-1] if result.steps else None), result.outcome, result.recording

    def _by_model(self, kind: str, task: str, expect: Callable[[Action], str | None]) -> Step:
        """A one-step run asking the model for ``kind``; returns its step (Refused if nothing was done)."""

        def refuse(action: Action, points_screen: list[tuple[int, int]]) -> str | None:
            return expect(action) or self._risky(action, points_screen)

        step, outcome, _ = self._run(task, refuse)
        if step is None:
            raise Refused(f"refused: {outcome.message}")
        if step.error:
            raise Refused(f"error: {step.error}")
        if step.decision == "refused":
            raise Refused(step.note)
        if step.action is None or step.action.get("kind") != kind:
            raise Refused(f"the model did not do it: it answered {step.action_text or 'nothing usable'}")
        return step

    def _direct(
        self, action: Action, points_screen: list[tuple[int, int]], call: str, secrets: Secrets | None = None
    ) -> str:
        """Perform an action given by the caller (no model): capture, gate, act, settle, record.
        ``secrets``: the placeholders a type action may hold."""
        agent = self.agent
        self.recording.begin()
        shot = agent.screen.capture()
        step = Step(
            step=1,
            started_at=time.time(),
            screenshot=self.recording.save_screenshot(1, shot.image),
            geometry=shot.monitor,
            thought=f"MCP call: {call}",
        )
        try:
            if points_screen:
                step.targets = [self._target(point, shot.monitor) for point in points_screen]
                boxes = dict(zip(("start_box", "end_box"), (t.box_model for t in step.targets)))
                action = action.model_copy(update=boxes)
            step.action, step.action_text = action.model_dump(mode="json"), action_to_call(action)
            reason = self._risky(action, points_screen) or (
                agent.refuse(action, points_screen) if agent.refuse is not None else None
            )
            if reason is not None:
                step.decision, step.note = "refused", reason
                raise Refused(reason)
            executor: Executor = agent.executor
            if secrets is not None and not agent.dry_run:
                executor = SecretTypingExecutor(executor, secrets)
            started = time.monotonic()
            executor.execute(action, points_screen)
            step.timings.execute_s = round(time.monotonic() - started, 4)
            if agent.settle is not None:
                step.timings.settle_s = round(agent.settle(), 4)
        except Refused as exc:
            step.decision, step.note = "refused", str(exc)
            raise
        except (DeskpilotError, ModelError) as exc:
            step.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.recording.write_step(step)
            self._count(step)
        return describe(action, points_screen) + (" (dry run: no input was sent)" if agent.dry_run else "")

    @staticmethod
    def _target(point_screen: tuple[int, int], geometry: MonitorGeometry) -> Target:
        """A caller's screen pixel as a Target; refused when it is not on the captured area."""
        x_image, y_image = screen_to_image(point_screen, geometry)
        if not (0 <= x_image < geometry.width and 0 <= y_image < geometry.height):
            width, height = round(geometry.width / geometry.scale), round(geometry.height / geometry.scale)
            raise Refused(
                f"refused: ({point_screen[0]}, {point_screen[1]}) is outside the screen area deskpilot sees "
                f"({geometry.left}, {geometry.top}, {width} x {height})"
            )
        box_model = image_to_model((x_image, y_image), geometry.size_image)
        return Target(box_model, (x_image, y_image), point_screen)

    def _point(self, tool: str, description: str | None, x: int | None, y: int | None) -> tuple[int, int] | None:
        """(x, y) for a call by pixel, None for one by description; Refused for anything else."""
        if description and x is None and y is None:
            return None
        if not description and x is not None and y is not None:
            return (x, y)
        raise Refused(f"{tool} takes either a description or both x and y (screen pixels)")

    # --- the tools --------------------------------------------------------------------------

    def screenshot(self) -> tuple[bytes, str, str]:
        """The screen as the model sees it: (image bytes, format, a line saying how its pixels map to the screen)."""
        self._check()
        self.recording.begin()
        settings = self.agent.settings
        shot = self.agent.screen.capture()
        sent = prepare_for_model(shot.image, settings.max_image_tokens, settings.image_encoding)
        step = Step(
            step=1,
            started_at=time.time(),
            screenshot=self.recording.save_screenshot(1, shot.image),
            geometry=shot.monitor,
            sent=SentInfo(
                width=sent.size[0], height=sent.size[1], encoding=sent.encoding, bytes=sent.n_bytes, tokens=sent.tokens
            ),
            thought="MCP call: screenshot()",
        )
        self.recording.write_step(step)
        self._count(step)
        m, (width, height) = shot.monitor, sent.size
        screen_w, screen_h = m.width / m.scale, m.height / m.scale
        text = (
            f"A {width}x{height} image of the screen area at ({m.left}, {m.top}), {screen_w:g} x {screen_h:g} screen "
            f"pixels: image pixel (x, y) is screen pixel ({m.left} + x * {screen_w / width:.4g}, "
            f"{m.top} + y * {screen_h / height:.4g}). Pointing tools take screen pixels, or a description."
        )
        data = base64.b64decode(sent.data_url.split(",", 1)[1])
        return data, sent.data_url[len("data:image/") : sent.data_url.index(";")], text

    def locate(self, description: str) -> dict[str, Any]:
        """Where the described element is: its box in screen pixels and in thousandths of the screen."""
        self._check()
        task = grounding_task("hover", description)
        step, outcome, _ = self._run(task, lambda action, points: "locate: found, nothing was done")
        if step is None:
            raise Refused(f"refused: {outcome.message}")
        if not step.targets:
            raise Refused(f"the model did not point at it: it answered {step.action_text or step.error}")
        target = step.targets[0]
        box = tuple(target.box_model)
        return {
            "element": description,
            "box_screen": box_on_screen(box, step.geometry),
            "center_screen": list(target.point_screen),
            "box_thousandths": list(box),
        }

    def point(self, tool: str, description: str | None, x: int | None, y: int | None) -> str:
        """``click``, ``double_click`` or ``right_click``, by description or at screen pixel (x, y)."""
        self._check()
        kind = CLICKS[tool]
        at = self._point(tool, description, x, y)
        if at is not None:
            return self._direct(build_action(kind, {"start_box": "[0,0]"}), [at], f"{tool}(x={x}, y={y})")
        assert description is not None
        step = self._by_model(kind, grounding_task(kind, description), _expect(kind))
        return self._done(step)

    def drag(
        self,
        from_description: str | None,
        to_description: str | None,
        x1: int | None,
        y1: int | None,
        x2: int | None,
        y2: int | None,
    ) -> str:
        """A left-button drag between two described elements, or between two screen pixels."""
        self._check()
        pixels = (x1, y1, x2, y2)
        if from_description and to_description and all(v is None for v in pixels):
            task = grounding_task("left_drag", from_description, to=to_description)
            return self._done(self._by_model("left_drag", task, _expect("left_drag")))
        if not from_description and not to_description and all(v is not None for v in pixels):
            action = build_action("left_drag", {"start_box": "[0,0]", "end_box": "[0,0]"})
            return self._direct(action, [(x1, y1), (x2, y2)], f"drag(x1={x1}, y1={y1}, x2={x2}, y2={y2})")  # type: ignore[list-item]
        raise Refused("drag takes from_description and to_description, or x1, y1, x2 and y2 (screen pixels)")

    def scroll(self, direction: str, amount: int, description: str | None, x: int | None, y: int | None) -> str:
        """Scroll the wheel ``amount`` clicks up or down over an element or a screen pixel."""
        self._check()
        at = self._point("scroll", description, x, y)
        if at is not None:
            action = build_action("scroll", {"start_box": "[0,0]", "direction": direction, "step": amount})
            return self._direct(action, [at], f"scroll(direction={direction!r}, amount={amount}, x={x}, y={y})")
        assert description is not None
        build_action("scroll", {"start_box": "[0,0]", "direction": direction, "step": amount})  # bad arguments fail now
        task = grounding_task("scroll", description, direction=direction, amount=amount)
        return self._done(self._by_model("scroll", task, _expect("scroll", direction=direction, step=amount)))

    def type_text(self, text: str) -> str:
        """Type ``text`` into the focused element ({{secret:NAME}} is typed from DESKPILOT_SECRET_NAME)."""
        self._check()
        secrets = self._learn(text)
        return self._direct(build_action("type", {"content": text}), [], f"type_text(text={text!r})", secrets)

    def press_keys(self, keys: str) -> str:
        """Press a key or a combination joined by '+', e.g. 'ctrl+s', 'enter'."""
        self._check()
        return self._direct(build_action("key", {"keys": keys}), [], f"press_keys(keys={keys!r})")

    def run_task(self, task: str, max_steps: int) -> dict[str, Any]:
        """The whole deskpilot loop on ``task``; its steps go into the session's recording."""
        self._check()
        if max_steps < 1:
            raise Refused("max_steps must be at least 1")
        step, outcome, recording = self._run(task, self._risky, max_steps)
        return {
            "status": outcome.status,
            "message": outcome.message,
            "answer": outcome.answer,
            "steps": outcome.steps,
            "cost_usd": round(outcome.cost_usd, 6),
            "recording": str(recording) if recording is not None else None,
        }

    def _done(self, step: Step) -> str:
        """What a call by description did, for the caller."""
        action = ACTION_ADAPTER.validate_python(step.action)
        done = describe(action, [t.point_screen for t in step.targets])
        return done + (" (dry run: no input was sent)" if self.agent.dry_run else "")

    def close(self) -> Outcome:
        """Write the session's outcome (the recording then loads as a finished run) and return it."""
        stop = self.agent.stop_event
        status: OutcomeStatus
        if stop is not None and stop.is_set():
            status, message = "interrupted", "stopped by the kill hotkey"
        elif self._budget_status is not None:
            status, message = self._budget_status
        else:
            status, message = "done", f"the MCP session ended after {self.steps} steps"
        outcome = Outcome(
            status=status,
            message=message,
            steps=self.steps,
            duration_s=round(time.monotonic() - self.started, 3),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=round(self.cost_usd, 8),
        )
        self.recording.close(outcome)
        return outcome


def _expect(kind: str, **arguments: Any) -> Callable[[Action], str | None]:
    """A check that the model answered exactly ``kind`` (with these arguments), else why not."""

    def expect(action: Action) -> str | None:
        if action.kind == kind and all(getattr(action, k, None) == v for k, v in arguments.items()):
            return None
        wanted = f"{kind}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"
        return f"refused: the model answered {action_to_call(action)}, not {wanted}; ask again or give screen pixels"

    return expect


def sdk() -> tuple[Any, Any, type[Exception]]:
    """The installed MCP SDK's server class, Image and ToolError: ``MCPServer`` in mcp 2, ``FastMCP``
    in mcp 1 (the same tool API). ImportError when the SDK is not installed."""
    try:
        from mcp.server.mcpserver import Image as SdkImage
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
    except ImportError:
        from mcp.server.fastmcp import FastMCP as MCPServer  # type: ignore  # mcp 1
        from mcp.server.fastmcp import Image as SdkImage  # type: ignore
        from mcp.server.fastmcp.exceptions import ToolError  # type: ignore
    return MCPServer, SdkImage, ToolError


def build_server(session: Session) -> Any:
    """The MCP server whose tools are the session's methods, each run in a worker thread under
    the session's lock; a refusal or one of our errors is a tool error with a clean message."""
    import anyio.to_thread

    server_class, image_class, tool_error = sdk()
    server = server_class(name="deskpilot", instructions=INSTRUCTIONS)

    def locked(method: Callable[..., Any], *args: Any) -> Any:
        with session.lock:
            return method(*args)

    async def call(method: Callable[..., Any], *args: Any) -> Any:
        try:
            return await anyio.to_thread.run_sync(functools.partial(locked, method, *args))
        except (Refused, DeskpilotError, ModelError) as exc:
            raise tool_error(session.clean(str(exc))) from None

    @server.tool()
    async def screenshot():  # unannotated on purpose: content blocks, not structured output
        """The current screen, sized like the image the model sees, and how its pixels map to screen pixels."""
        data, fmt, text = await call(session.screenshot)
        return [image_class(data=data, format=fmt), text]

    @server.tool()
    async def locate(description: Annotated[str, Field(description="the element in words")]) -> dict[str, Any]:
        """Find an element with GLM-4.5V: its box and centre in screen pixels, and its box in thousandths."""
        located: dict[str, Any] = await call(session.locate, description)
        return located

    @server.tool()
    async def click(description: Description = None, x: X = None, y: Y = None) -> str:
        """Left-click an element (by description) or a screen pixel (x, y)."""
        return session.clean(await call(session.point, "click", description, x, y))

    @server.tool()
    async def double_click(description: Description = None, x: X = None, y: Y = None) -> str:
        """Double-click an element (by description) or a screen pixel (x, y)."""
        return session.clean(await call(session.point, "double_click", description, x, y))

    @server.tool()
    async def right_click(description: Description = None, x: X = None, y: Y = None) -> str:
        """Right-click an element (by description) or a screen pixel (x, y)."""
        return session.clean(await call(session.point, "right_click", description, x, y))

    @server.tool()
    async def drag(
        from_description: Description = None,
        to_description: Description = None,
        x1: X = None,
        y1: Y = None,
        x2: X = None,
        y2: Y = None,
    ) -> str:
        """Drag with the left button from one element to another (by description), or from (x1, y1) to (x2, y2)."""
        return session.clean(await call(session.drag, from_description, to_description, x1, y1, x2, y2))

    @server.tool()
    async def scroll(
        direction: Annotated[str, Field(description="up or down")],
        amount: Annotated[int, Field(description="wheel clicks, 1-50")] = 5,
        description: Description = None,
        x: X = None,
        y: Y = None,
    ) -> str:
        """Scroll the mouse wheel over an element (by description) or a screen pixel (x, y)."""
        return session.clean(await call(session.scroll, direction, amount, description, x, y))

    @server.tool()
    async def type_text(text: Annotated[str, Field(description="the exact text; a line break presses Enter")]) -> str:
        """Type text into the focused element (it does not click or clear it first)."""
        return session.clean(await call(session.type_text, text))

    @server.tool()
    async def press_keys(keys: Annotated[str, Field(description="e.g. 'enter', 'ctrl+s', 'alt+tab'")]) -> str:
        """Press a key or a key combination joined by '+'."""
        return session.clean(await call(session.press_keys, keys))

    @server.tool()
    async def run_task(
        task: Annotated[str, Field(description="what to do, in plain words")],
        max_steps: Annotated[int, Field(description="step budget of this task")] = 30,
    ) -> dict[str, Any]:
        """Perform a whole task with the deskpilot agent; returns its outcome, answer and recording."""
        result = await call(session.run_task, task, max_steps)
        return {k: session.clean(v) if isinstance(v, str) else v for k, v in result.items()}

    return server


def serve(agent: Agent, *, allow_risky: bool = False, on_ready: Callable[[Session], None] | None = None) -> Outcome:
    """Serve MCP on stdin/stdout until the client goes away; returns the session's outcome."""
    session = Session(agent, allow_risky=allow_risky)
    try:
        server = build_server(session)
        if on_ready is not None:
            on_ready(session)
        server.run("stdio")
    finally:
        outcome = session.close()
    return outcome


def require_sdk() -> None:
    """UsageError (exit 2) saying how to install the MCP SDK when it is missing."""
    try:
        sdk()
    except ImportError:
        raise UsageError(
            "deskpilot mcp needs the MCP Python SDK: pip install 'deskpilot[mcp]' (or pip install mcp)"
        ) from None
