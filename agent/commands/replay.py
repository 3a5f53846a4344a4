"""``deskpilot replay RECORDING --mode check|simulate|execute``: a recording as a regression test,
a dry loop, or a live macro without the model (see ``agent.replay``). Prints one line per
difference (``DIFFERS step N: ...``) and a summary; exit 1 when a step differed. With ``--json`` those
are JSON Lines on stdout (one ``difference`` object each, then a ``result``) and the lines for a person go
to stderr.

``deskpilot replay DIR`` (a folder holding recordings at any depth, none of a recording's own
files) checks or simulates each of them: one line per recording and a summary; exit 1 when one
differs, 2 when one cannot be read."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.argtypes import nonneg_float, positive_float
from agent.commands.common import Console, add_model_arguments, settings_from_args
from agent.errors import EXIT_DONE, EXIT_NOT_DONE, EXIT_USAGE, UsageError
from agent.replay.live import THRESHOLD, HealFailed, LiveReplayer, ModelHealer
from agent.replay.offline import Difference, find_recordings, replay_offline
from agent.safety import DEFAULT_ALWAYS_CONFIRM, DEFAULT_KILL_HOTKEY, Approver, describe_hotkey
from agent.trajectory import Recording, load

MODES = ("check", "simulate", "execute")
RECORDING_FILES = ("header.json", "steps.jsonl", "outcome.json")  # a folder with one of them is one recording


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "recording",
        help="a recording folder (recordings/<time>-<task>), or a folder of recordings at any depth "
        "(check or simulate each)",
    )
    p.add_argument("--mode", choices=MODES, default="check", help="default: check")
    p.add_argument(
        "--json",
        action="store_true",
        help="write each difference and the result as JSON Lines to stdout; the lines for a person go to stderr",
    )
    live = p.add_argument_group("execute")
    live.add_argument(
        "--heal", action="store_true", help="when the screen differs, ask the model to find the recorded element again"
    )
    live.add_argument(
        "--speed", type=positive_float, default=1.0, metavar="X", help="replay the recorded pauses X times faster"
    )
    live.add_argument(
        "--max-wait", type=nonneg_float, default=5.0, metavar="SECONDS", help="longest pause between two actions"
    )
    live.add_argument(
        "--threshold",
        type=nonneg_float,
        default=THRESHOLD,
        metavar="SCORE",
        help=f"largest patch difference (0-1) still taken as the same screen (default: {THRESHOLD})",
    )
    live.add_argument(
        "--settle",
        type=nonneg_float,
        default=2.0,
        metavar="SECONDS",
        help="how long to wait for the screen to match before it counts as changed (default: 2)",
    )
    live.add_argument("--monitor", type=int, metavar="N", help="monitor to act on (default: the recorded one)")
    live.add_argument(
        "--confirm", action="store_true", help="ask approve / skip / edit / quit before every recorded action"
    )
    live.add_argument(
        "--always-confirm",
        default=",".join(DEFAULT_ALWAYS_CONFIRM),
        metavar="COMBOS",
        help="key combinations that always need approval, as in run (default: %(default)s)",
    )
    add_model_arguments(p, recorded=True)


def cmd_replay(args: argparse.Namespace, console: Console) -> int:
    console.json = args.json
    folder = Path(args.recording)
    if folder.is_dir() and not any((folder / name).exists() for name in RECORDING_FILES):
        return _replay_many(folder, args.mode, console)
    recording = load(folder)
    n_replies = sum(len(s.attempts) for s in recording.steps)
    by_person = sum(s.by_person for s in recording.steps)
    what = f"{by_person} recorded from a person" if by_person else f"{n_replies} replies"
    console.say(
        f"deskpilot replay ({args.mode}): {recording.path}: {recording.header.task!r}, "
        f"{len(recording.steps)} steps, {what}, recorded outcome {recording.outcome.status}"
    )
    if by_person and args.mode != "execute":
        console.say(
            "deskpilot replay: a person's steps have no model reply to parse again: their actions, keys and "
            "targets are checked with today's code"
            + ("" if args.mode == "check" else ", then performed dry on the recorded screenshots")
        )
    performed, healed = 0, list[int]()
    if args.mode != "execute":
        _refuse_simulating_mcp(recording, args.mode)
        found = replay_offline(recording, args.mode)
    else:
        found, performed, healed = _execute(recording, args, console)
    for difference in found:
        console.say(f"DIFFERS {difference}")
        if args.json:
            console.emit("difference", {"step": difference.step, "what": difference.what})
    code = EXIT_NOT_DONE if found else EXIT_DONE
    if args.json:
        console.emit(
            "result",
            {"mode": args.mode, "recording": str(recording.path), "steps": len(recording.steps),
             "differing_steps": sorted({d.step for d in found}), "performed": performed, "healed": healed,
             "exit_code": code},
        )  # fmt: skip
    if found:
        steps = sorted({d.step for d in found})
        console.say(f"deskpilot replay: {len(steps)} step(s) differ: {', '.join(map(str, steps))}")
    elif args.mode == "execute":
        note = f"; healed steps {', '.join(map(str, healed))}" if healed else ""
        console.say(f"deskpilot replay: performed {performed} recorded actions{note}")
    else:
        console.say(f"deskpilot replay: all {len(recording.steps)} steps match")
    return code


def _replay_many(folder: Path, mode: str, console: Console) -> int:
    """Check or simulate every recording under ``folder``: a line each and a summary."""
    if mode == "execute":
        raise UsageError(f"{folder} is a folder of recordings: --mode execute replays one recording, give its folder")
    recordings = find_recordings(folder)
    if not recordings:
        raise UsageError(f"{folder} holds no recordings (folders with a header.json) at any depth")
    differ = unreadable = 0
    for path in recordings:
        shown = path.relative_to(folder).as_posix()
        try:
            recording = load(path)
            _refuse_simulating_mcp(recording, mode)
            found = replay_offline(recording, mode)
        except UsageError as exc:
            unreadable += 1
            console.say(f"UNREADABLE  {shown}: {exc}")
            if console.json:
                console.emit("recording", {"recording": shown, "status": "unreadable", "error": str(exc)})
            continue
        if found:
            differ += 1
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            console.say(f"DIFFERS     {shown}: {found[0]}{more}")
        else:
            console.say(f"ok          {shown}: {len(recording.steps)} steps match")
        if console.json:
            console.emit(
                "recording",
                {"recording": shown, "status": "differs" if found else "ok",
                 "differences": [{"step": d.step, "what": d.what} for d in found]},
            )  # fmt: skip
    matched = len(recordings) - differ - unreadable
    console.say(
        f"deskpilot replay ({mode}): {len(recordings)} recordings under {folder}: {matched} match, "
        f"{differ} differ, {unreadable} unreadable"
    )
    code = EXIT_USAGE if unreadable else EXIT_NOT_DONE if differ else EXIT_DONE
    if console.json:
        console.emit(
            "result",
            {"mode": mode, "folder": str(folder), "recordings": len(recordings), "match": matched,
             "differ": differ, "unreadable": unreadable, "exit_code": code},
        )  # fmt: skip
    return code


def _refuse_simulating_mcp(recording: Recording, mode: str) -> None:
    if mode == "simulate" and recording.header.mode == "mcp":
        raise UsageError(
            f"{recording.path} records an MCP session (its actions came from another agent, not from one run of "
            "the loop): simulate does not apply; use --mode check or --mode execute"
        )


def _execute(
    recording: Recording, args: argparse.Namespace, console: Console
) -> tuple[list[Difference], int, list[int]]:
    """Replay live; returns the differences, the number of actions performed, the healed steps."""
    from contextlib import ExitStack

    from actions.pyautogui_executor import PyAutoGuiExecutor
    from agent.capture import MssScreen, Screen
    from agent.planner import GLMPlanner
    from agent.safety import KillSwitch, Secrets, SecretTypingExecutor

    monitor = args.monitor if args.monitor is not None else (recording.header.monitor_index or 1)
    # the task's placeholders, and those any recorded type action holds: a person's recording made
    # with --mask-typing ({{secret:TYPED_N}}), or an MCP session's type_text
    typed = [s.action.get("content") or "" for s in recording.steps if s.action and s.action.get("kind") == "type"]
    secrets = Secrets.from_task(" ".join([recording.header.task, *typed]))
    console.scrub = secrets.scrub
    prompt_to = sys.stderr if args.json else None  # in JSON mode stdout holds JSON only
    approve = Approver(args.confirm, args.always_confirm, stdout=prompt_to, scrub=secrets.scrub)
    with ExitStack() as stack:
        scope = refuse = None
        screen: Screen
        if recording.header.window:
            from agent.window import WindowScope

            scope = WindowScope(recording.header.window["pattern"])
            stack.callback(scope.close)
            screen = scope.screen(monitor)
            refuse = lambda action, points: scope.refuse(action.kind, points)  # noqa: E731
        else:
            screen = MssScreen(monitor)
        stack.callback(screen.close)
        healer = None
        if args.heal:
            settings = settings_from_args(args, recording.header.settings)
            planner = GLMPlanner(settings, scrub=secrets.scrub)
            stack.callback(planner.close)
            healer = ModelHealer(planner, settings, recording.header.task)
        kill_switch = KillSwitch(DEFAULT_KILL_HOTKEY).start()
        stack.callback(kill_switch.stop)
        live = PyAutoGuiExecutor(should_stop=kill_switch.stop_event.is_set)
        stack.callback(live.close)
        executor = SecretTypingExecutor(live, secrets)
        console.say(
            f"deskpilot replay: stop with {describe_hotkey(DEFAULT_KILL_HOTKEY)} (in any window), Ctrl-C here, "
            "or throw the mouse into a screen corner"
        )
        replayer = LiveReplayer(
            recording,
            screen,
            executor,
            healer=healer,
            approve=approve,
            refuse=refuse,
            threshold=args.threshold,
            speed=args.speed,
            max_wait=args.max_wait,
            settle=args.settle,
            log=console.say,
        )
        try:
            found = replayer.run()
        except HealFailed as exc:
            found = [Difference(replayer.current, str(exc))]
    return found, replayer.performed, replayer.healed
