"""Operator commands: register a model, start and steer rollouts, read their status."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.cli.history_cmd import evidence_line, read_history
from model_canary.agents.client.control import ControlClient, ControlOutcome
from model_canary.agents.kafka.state_view import StateView
from model_canary.streams.defaults import DEFAULT_STEPS_BP, steps_percent
from model_canary.streams.errors import ConfigError
from model_canary.streams.messages import Decision, Mode, Phase, RolloutState
from model_canary.streams.plan import RolloutPlan, load_plan, outcome_metrics, parse_plan, plan_of
from model_canary.streams.settings import Settings
from model_canary.streams.signing_keys import KeyRing
from model_canary.streams.stats.verdicts import current_decision
from model_canary.streams.topics import validate_name

ROLLED_BACK_EXIT = 3
TIMEOUT_EXIT = 4
T = TypeVar("T")


def percent_to_bp(text: str) -> int:
    """``"2.5"`` -> 250 basis points; outside 0..100 -> ConfigError."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"weight must be a percentage, got {text!r}") from None
    if not 0 <= value <= 100:
        raise ConfigError(f"weight {text}% is outside 0..100")
    return round(value * 100)


def steps_to_bp(text: str) -> tuple[int, ...]:
    """``"1,20,50,100"`` -> (100, 2000, 5000, 10000)."""
    return tuple(percent_to_bp(part.strip()) for part in text.split(",") if part.strip())


def _arg(convert: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type=``: a ConfigError becomes argparse's own usage error."""

    def parse(text: str) -> T:
        try:
            return convert(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = convert.__name__
    return parse


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    model = sub.add_parser("model", help="register a model's stable version")
    model_actions = model.add_subparsers(dest="model_action", required=True, metavar="ACTION")
    reg = model_actions.add_parser(
        "register", parents=[common], help="declare the version that serves a model's traffic"
    )
    reg.add_argument("model")
    reg.add_argument("--version", required=True, help="the stable version, e.g. v1")
    _key_option(reg)
    reg.set_defaults(handler=_run, action="register")

    rollout = sub.add_parser("rollout", help="start a rollout")
    r_actions = rollout.add_subparsers(dest="rollout_action", required=True, metavar="ACTION")
    start = r_actions.add_parser(
        "start",
        parents=[common],
        help="start a canary (or shadow) rollout of a new version",
        description="Start sending the canary version a share of the model's traffic, rising "
        "through --steps. The baseline defaults to the model's stable version; a model not "
        "registered yet is registered with --baseline. A plan with 'preflight: {since, "
        "min_requests}' starts only on a passing pre-flight of the candidate against that "
        "baseline (run here when none is recorded; see docs/preflight.md), which the "
        "rollout's stored plan names (preflight_id).",
    )
    start.add_argument(
        "--plan",
        type=Path,
        metavar="FILE",
        help="a rollout plan (YAML or JSON): steps, durations, metrics and tolerances, alpha; "
        "flags given here override it",
    )
    start.add_argument("--model", help="the model (required without --plan)")
    start.add_argument("--baseline", help="baseline version (default: the stable version)")
    start.add_argument("--canary", help="the new version (required without --plan)")
    start.add_argument(
        "--steps",
        type=_arg(steps_to_bp),
        help=f"canary weights in percent (default {steps_percent(DEFAULT_STEPS_BP)})",
    )
    start.add_argument(
        "--shadow",
        action="store_true",
        help="mirror traffic to the canary without serving its outputs",
    )
    start.add_argument(
        "--shadow-sample",
        type=_arg(percent_to_bp),
        metavar="PERCENT",
        help="share of requests mirrored in shadow mode (default 100)",
    )
    start.add_argument(
        "--no-preflight-run",
        action="store_true",
        help="with a plan that requires a pre-flight: only look for a passing one, never run "
        "one (the rollout is not started without it)",
    )
    _key_option(start)
    start.set_defaults(handler=_run, action="start")

    def simple(name: str, action: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.add_argument("model")
        p.add_argument("--reason", default="", help="why (kept in the rollout's history)")
        _key_option(p)
        p.set_defaults(handler=_run, action=action)
        return p

    weight = simple("set-weight", "set_weight", "set the canary's share of traffic now")
    weight.add_argument("weight", type=_arg(percent_to_bp), help="percent, 0..100")
    promote = simple("promote", "advance", "move the canary to its next step")
    promote.add_argument(
        "--full", action="store_true", help="finalize now: the canary becomes the stable version"
    )
    rollback = simple("rollback", "rollback", "send all traffic back to the baseline now")
    rollback.set_defaults(reason_required=True)
    simple("pause", "pause", "keep the current weight; the evaluator stops moving it")
    simple("resume", "resume", "let the rollout move again")

    status = sub.add_parser(
        "status",
        parents=[common],
        help="show a model's rollout state (exit 0 healthy or finished, 3 rolled back)",
        description="Show a model's rollout state. Exit code: 0 when healthy or finished, "
        "3 when rolled back, 4 when --watch timed out.",
    )
    status.add_argument("model")
    status.add_argument("--json", action="store_true", help="print the state as JSON")
    status.add_argument(
        "--watch",
        action="store_true",
        help="print every change until the rollout ends (Succeeded: exit 0, RolledBack: exit 3)",
    )
    status.add_argument(
        "--timeout", type=float, help="with --watch: give up after this many seconds (exit 4)"
    )
    status.set_defaults(handler=run_status)


def _key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help="sign the command with the first key of FILE ('ID:SECRET' lines; default: "
        "CANARY_CONTROL_KEY, then CANARY_CONTROL_KEY_FILE)",
    )


def _run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.key_file:
        settings = settings.with_overrides(control_keys=KeyRing.read(args.key_file))
    control = ControlClient(settings)
    action: str = args.action
    fields: dict[str, Any] = {"reason": getattr(args, "reason", "") or ""}
    if getattr(args, "reason_required", False) and not fields["reason"]:
        raise ConfigError("rollback needs --reason TEXT (it is kept in the rollout's history)")
    if action == "register":
        fields["baseline_version"] = args.version
    elif action == "start":
        plan = start_plan(args)
        args.model = plan.model
        if plan.preflight is not None:
            plan = _preflighted(settings, control, plan, run=not args.no_preflight_run)
        if plan.baseline:
            fields["baseline_version"] = plan.baseline
        fields.update(
            canary_version=plan.canary,
            steps_bp=plan.steps_bp,
            mode=Mode(plan.mode),
            shadow_sample_bp=plan.shadow_sample_bp,
            plan_json=plan.to_json(),
        )
        if not plan.baseline and control.state(plan.model) is None:
            raise ConfigError(f"model {plan.model!r} is not registered: give --baseline")
    elif action == "set_weight":
        fields["weight_bp"] = args.weight
    elif action == "advance" and args.full:
        action = "finalize"
    model = args.model
    outcome = control.send(model, action, **fields)
    _print_outcome(outcome)
    return 0


def _preflighted(
    settings: Settings, control: ControlClient, plan: RolloutPlan, *, run: bool
) -> RolloutPlan:
    """``plan`` naming the passing pre-flight it requires; :class:`PreflightRequiredError`
    (nothing is started) when there is none."""
    from model_canary.agents.preflight.gate import require_preflight  # only when required

    assert plan.preflight is not None
    baseline = plan.baseline
    if baseline is None:
        state = control.state(plan.model)
        if state is None:
            raise ConfigError(f"model {plan.model!r} is not registered: give --baseline")
        baseline = state.stable_version
    record = require_preflight(
        settings,
        plan,
        baseline,
        plan.preflight,
        run=run,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    return replace(plan, preflight_id=record.preflight_id)


def start_plan(args: argparse.Namespace) -> RolloutPlan:
    """The plan of ``rollout start``: the --plan file (if any) with the flags laid over it."""
    base = load_plan(args.plan) if args.plan else None
    overrides: dict[str, Any] = {}
    if args.model:
        overrides["model"] = validate_name("model", args.model)
    if args.canary:
        overrides["canary"] = validate_name("version", args.canary)
    if args.baseline:
        overrides["baseline"] = validate_name("version", args.baseline)
    if args.steps:
        overrides["steps_bp"] = args.steps
    if args.shadow:
        overrides["mode"] = "shadow"
    if args.shadow_sample is not None:
        overrides["shadow_sample_bp"] = args.shadow_sample
    if base is None:
        if not args.model or not args.canary:
            raise ConfigError("rollout start needs --model and --canary, or --plan FILE")
        base = parse_plan({"model": args.model, "canary": args.canary})
    plan = replace(base, **overrides)
    if plan.baseline is not None and plan.baseline == plan.canary:
        raise ConfigError("the canary version equals the baseline")
    return plan


def _print_outcome(outcome: ControlOutcome) -> None:
    e = outcome.event
    weight = f", canary weight {e.weight_bp / 100:g}%" if e.weight_bp is not None else ""
    print(f"{e.action} {e.model}: {e.outcome}: {e.detail}{weight}")


def run_status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.watch:
        return watch(settings, args.model, as_json=args.json, timeout=args.timeout)
    state = ControlClient(settings).state(args.model)
    if state is None:
        raise ConfigError(f"model {args.model!r} is unknown: register it first")
    decisions = [r for r in read_history(settings, args.model) if isinstance(r, Decision)]
    _show(state, args.json, current_decision(state, decisions))
    return ROLLED_BACK_EXIT if state.phase is Phase.ROLLED_BACK else 0


def watch(settings: Settings, model: str, *, as_json: bool, timeout: float | None) -> int:
    """Follow the rollout state as it changes, like ``kubectl argo rollouts status --watch``."""
    view = StateView(settings, client_id="canary-status-watch")
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = -1
    try:
        view.catch_up(timeout=10)
        while deadline is None or time.monotonic() < deadline:
            state = view.get(model)
            if state is not None and state.revision != shown:
                shown = state.revision
                _show(state, as_json)
                if state.phase is Phase.ROLLED_BACK:
                    return ROLLED_BACK_EXIT
                if state.phase in (Phase.SUCCEEDED, Phase.STABLE):
                    return 0
            view.poll(0.5)
    finally:
        view.close()
    return TIMEOUT_EXIT


def _show(state: RolloutState, as_json: bool, decision: Decision | None = None) -> None:
    if as_json:
        doc = state_json(state)
        if decision is not None:
            doc["verdict"] = {
                "outcome": decision.outcome.value,
                "reason": decision.reason,
                "decided_at": decision.decided_at.isoformat(),
                "evidence": [
                    {f.name: getattr(e, f.name) for f in dataclasses.fields(e)}
                    for e in decision.evidence
                ],
            }
        print(json.dumps(doc), flush=True)
    else:
        text = describe_state(state)
        if decision is not None:
            text += (
                f"\nverdict   {decision.outcome.value} {decision.reason} "
                f"(decided {decision.decided_at.isoformat(timespec='seconds')})"
            )
            text += "".join(f"\n          {evidence_line(e)}" for e in decision.evidence)
        print(text + "\n", flush=True)


def state_json(state: RolloutState) -> dict[str, Any]:
    return {
        "model": state.model,
        "rollout_id": state.rollout_id,
        "phase": state.phase.value,
        "mode": state.mode.value,
        "stable": state.stable_version,
        "baseline": state.baseline_version,
        "canary": state.canary_version,
        "weight_percent": state.weight_bp / 100,
        "steps_percent": [s / 100 for s in state.steps_bp],
        "step_index": state.step_index,
        "revision": state.revision,
        "updated_at": state.updated_at.isoformat(),
        "reason": state.reason,
        "preflight_id": _preflight_of(state),
        "outcome_metrics": (
            outcome_metrics(plan_of(state.model, state.canary_version, state.plan_json))
            if state.canary_version and state.plan_json
            else {}
        ),
    }


def _preflight_of(state: RolloutState) -> str | None:
    """The pre-flight the rollout rests on (its stored plan names it), if any."""
    if not state.canary_version or not state.plan_json:
        return None
    return plan_of(state.model, state.canary_version, state.plan_json).preflight_id


def describe_state(state: RolloutState) -> str:
    lines = [
        f"model     {state.model}",
        f"phase     {state.phase.value}",
        f"stable    {state.stable_version}",
    ]
    if state.canary_version:
        steps = " -> ".join(
            f"[{s / 100:g}%]" if i == state.step_index else f"{s / 100:g}%"
            for i, s in enumerate(state.steps_bp)
        )
        lines += [
            f"rollout   {state.rollout_id} ({state.mode.value})",
            f"baseline  {state.baseline_version}",
            f"canary    {state.canary_version}",
            f"weight    {state.weight_bp / 100:g}%",
            f"steps     {steps}",
        ]
        preflight = _preflight_of(state)
        if preflight:
            lines.append(f"preflight {preflight} (passed before the rollout started)")
        if state.plan_json:
            plan = plan_of(state.model, state.canary_version, state.plan_json)
            for name, bad_when in outcome_metrics(plan).items():
                lines.append(f"outcome   {name}: bad when {bad_when}")
    if state.reason:
        lines.append(f"last move {state.reason}")
    lines.append(f"updated   {state.updated_at.isoformat()} (revision {state.revision})")
    return "\n".join(lines)
