"""The evaluator's test bench: many simulated rollouts driven by the product's own code.

Every second of every rollout: requests are routed by the router's split, served (see
:mod:`.traffic`), and summarised into evidence cells as the producers publish them; the cells
of an arm reach the evaluator after that arm's lag, labels after their delay. The evaluator's
own pure code then runs exactly as in production:

* :class:`~model_canary.streams.stats.watermark.Completeness` (the evaluator's own, which
  :class:`~model_canary.streams.evidence.state.RolloutEvidence` runs over one rollout) says
  which routed seconds are complete in every arm, and the
  :class:`~model_canary.streams.stats.tally.Tally` releases them (warm-up excluded);
* the latency thresholds are fixed from the tally's pooled histogram by
  :mod:`~model_canary.streams.stats.thresholds` and used by the "workers" from then on;
* every second (the evaluator's cadence) :func:`~model_canary.streams.stats.snapshot.take_snapshot`
  and :func:`~model_canary.streams.stats.decide.decide_many` decide, with the plan's
  :func:`~model_canary.streams.stats.snapshot.policy`;
* the verdict's command (:func:`~model_canary.streams.stats.verdicts.action_for`) goes through
  the rollout state machine (:func:`~model_canary.streams.rollout.machine.apply_command`) and
  the new weight routes the next second.

In a harmful scenario a rollback is recorded and the rollout is kept at its weight until the
oracle (:mod:`.oracle`) also decides, so both are measured on the same evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from model_canary.streams.enums import Action, Mode, Outcome, Phase
from model_canary.streams.errors import CommandRejectedError
from model_canary.streams.messages import ControlCommand, RolloutState, from_epoch_ms
from model_canary.streams.plan import RolloutPlan, parse_plan
from model_canary.streams.rollout.machine import apply_command
from model_canary.streams.sim.oracle import Oracle
from model_canary.streams.sim.scenario import RATED_BAD_WHEN, RATED_METRIC, Scenario
from model_canary.streams.sim.traffic import Population, serve
from model_canary.streams.stats.decide import CODES, HOLD, OUTCOMES, decide_many
from model_canary.streams.stats.layout import ARMS, MAX_BP
from model_canary.streams.stats.snapshot import Progress, policy, take_snapshot, tally_for
from model_canary.streams.stats.thresholds import first_step_done, thresholds_from_hist
from model_canary.streams.stats.thresholds import ready as thresholds_ready
from model_canary.streams.stats.verdicts import HOLDING_CODES, action_for
from model_canary.streams.stats.watermark import Completeness

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

#: The evaluator decides once a second (its timer's interval).
DECISION_INTERVAL_S = 1
#: Seconds from a command (or a threshold decision) to the router/workers acting on it.
PROPAGATION_S = 1
#: Indices of the HOLD codes that ask for a command (the rollout goes to Holding).
_HOLDING = np.array([CODES.index(c) for c in sorted(HOLDING_CODES)], dtype=np.int64)


def scenario_plan(scenario: Scenario) -> RolloutPlan:
    """The plan a scenario runs under: the default plan with the scenario's changes (and the
    accuracy metric when the scenario has labels and names no metrics; the outcome metric
    ``thumbs_down``, bad when ``label == 'down'``, when its users rate answers)."""
    doc: dict[str, Any] = {"model": "sim", "baseline": "v1", "canary": "v2", **scenario.plan}
    if (scenario.labelled or scenario.rated) and "metrics" not in doc:
        doc["metrics"] = {"errors": None, "latency_p95": None, "latency_p99": None}
        if scenario.labelled:
            doc["metrics"]["accuracy"] = None
    if scenario.rated:
        doc["metrics"] = dict(doc["metrics"])
        doc["metrics"].setdefault(RATED_METRIC, {"bad_when": RATED_BAD_WHEN})
    return parse_plan(doc)


@dataclass
class RunResult:
    """Per replica: what happened (seconds are from the rollout's start; -1: never)."""

    scenario: Scenario
    plan_json: str
    rollback_s: FloatArray
    rollback_canary: FloatArray  #: canary requests served until the rollback
    full_s: FloatArray  #: reached 100% (promoted)
    finalized_s: FloatArray
    oracle_s: FloatArray
    oracle_canary: FloatArray
    last_code: list[str] = field(default_factory=list)
    oracle_defined: bool = False


def simulate(scenario: Scenario, replicas: int, seed: int | np.random.SeedSequence) -> RunResult:
    """Run ``replicas`` rollouts of ``scenario``."""
    return _Bench(scenario, replicas, np.random.default_rng(seed)).run()


class _Bench:
    def __init__(self, scenario: Scenario, replicas: int, rng: np.random.Generator) -> None:
        self.s = scenario
        self.r = replicas
        self.rng = rng
        self.plan = scenario_plan(scenario)
        self.rule = policy(self.plan)
        self.control = self.plan.control
        self.pop = Population.new(scenario, replicas, rng)
        self.tally = tally_for(self.plan, replicas)
        self.complete = Completeness(replicas)
        self.queue: dict[int, list[tuple[str, Any]]] = {}
        self.thresholds = np.full((replicas, 2), np.nan)
        self.thresholds_from = np.full(replicas, np.iinfo(np.int64).max, dtype=np.int64)
        self.cold = np.zeros((replicas, len(ARMS)), dtype=bool)
        self.cold[:, 0] = True  # the canary's workers start with the rollout
        self.cold[:, 1] = self.control
        self.canary_served = np.zeros(replicas)
        self.states = [self._start(i) for i in range(replicas)]
        # The states' weight, step and step start as arrays, updated with each new state.
        self.weight_bp = np.array([s.weight_bp for s in self.states], dtype=np.int64)
        self.step_index = np.array([s.step_index for s in self.states], dtype=np.int64)
        self.step_started_s = np.array([_seconds(s.step_started_at) for s in self.states])
        self.code = np.full(replicas, -1, dtype=np.int64)  #: the last verdict's code index
        self.oracle = Oracle.of(scenario, self.plan, self.rule)
        nan = np.full(replicas, -1.0)
        self.out = RunResult(
            scenario=scenario,
            plan_json=self.plan.to_json(),
            rollback_s=nan.copy(),
            rollback_canary=nan.copy(),
            full_s=nan.copy(),
            finalized_s=nan.copy(),
            oracle_s=nan.copy(),
            oracle_canary=nan.copy(),
            last_code=[""] * replicas,
            oracle_defined=self.oracle is not None,
        )
        self.deciding = np.ones(replicas, dtype=bool)  # the evaluator acts on its verdicts
        self.watching = np.zeros(replicas, dtype=bool)  # kept at its weight for the oracle

    def _start(self, i: int) -> RolloutState:
        now = _at(0)
        reg = ControlCommand(
            command_id=f"reg-{i}",
            model="sim",
            action=Action.REGISTER,
            issued_at=now,
            baseline_version="v1",
        )
        start = ControlCommand(
            command_id=f"rollout-{i}",
            model="sim",
            action=Action.START,
            issued_at=now,
            canary_version="v2",
            steps_bp=self.plan.steps_bp,
            plan_json=self.plan.to_json(),
        )
        return apply_command(apply_command(None, reg, now), start, now)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> RunResult:
        horizon = self.s.minutes * 60
        for t in range(horizon):
            live = np.flatnonzero(self.deciding | self.watching)
            if live.size == 0:
                break
            self._serve(t, live)
            self._deliver(t)
            watermark = self.complete.watermark(t + 1)
            self.tally.release(watermark)
            self._fix_thresholds(t)
            if t % DECISION_INTERVAL_S == 0:
                self._decide(t, live)
        self.out.last_code = [CODES[c] if c >= 0 else "" for c in self.code.tolist()]
        for i in np.flatnonzero(self.deciding):
            self.out.last_code[i] = self.out.last_code[i] or "horizon"
        return self.out

    def _weights(self, idx: IntArray) -> IntArray:
        return self.weight_bp[idx]

    def _serve(self, t: int, live: IntArray) -> None:
        weights = self._weights(live)
        routing = live[(weights > 0) | self.watching[live]]
        if routing.size == 0:
            return
        w = self._weights(routing)
        known = self.thresholds_from[routing] <= t
        thr = np.where(known[:, None], self.thresholds[routing], np.nan)
        cold = self.cold[routing]
        cells = serve(self.s, self.pop, routing, w, self.control, t, thr, cold, self.rng)
        self.cold[routing] = cold
        self.canary_served[routing] += cells.routed[:, 0]
        for a, arm in enumerate(ARMS):
            self.complete.add_routed(t, arm, cells.routed[:, a], routing)
        # A weight's warm-up starts at its first second with requests routed (as the
        # evaluator sees it: a router publishes no evidence for a second without traffic).
        busy = cells.routed.sum(axis=1) > 0
        for weight in np.unique(w[busy]):
            at = busy & (w == weight)
            self.tally.add_routed(t, int(weight), replicas=routing[at])
        lag = {arm: self.s.arm(arm, 0).lag_s for arm in ARMS}
        for a, arm in enumerate(ARMS):
            self._enqueue(t + lag[arm], ("served", (t, arm, a, routing, w, cells)))
        if cells.labels is not None:
            for a, arm in enumerate(ARMS):
                delay = self.s.arm(arm, 0).label_delay_s
                self._enqueue(t + delay, ("labels", (t, arm, a, routing, w, cells)))
        pre = cells.hist_counts.any(axis=1)
        if pre.any():
            self.tally.add_latency_hist(
                "baseline",
                bins=cells.hist_bins[pre],
                counts=cells.hist_counts[pre],
                replicas=routing[pre],
            )

    def _enqueue(self, when: int, item: tuple[str, Any]) -> None:
        self.queue.setdefault(when, []).append(item)

    def _deliver(self, t: int) -> None:
        for kind, (second, arm, a, idx, w, cells) in self.queue.pop(t, []):
            if kind == "served":
                self.complete.add_done(second, arm, cells.routed[:, a], idx)
            for weight in np.unique(w):
                at = w == weight
                if not at.any():
                    continue
                rows = cells.buckets[at, a]
                if kind == "served":
                    c = cells.counts[at, a]
                    self.tally.add_served(
                        second,
                        int(weight),
                        arm,
                        buckets=rows,
                        n=c[..., 0],
                        errors=c[..., 1],
                        timed=c[..., 2],
                        over_p95=c[..., 3],
                        over_p99=c[..., 4],
                        batch=cells.batch[at, a],
                        replicas=idx[at],
                    )
                else:
                    assert cells.labels is not None
                    lab = cells.labels[at, a]
                    if not (lab[..., 0].any() or lab[..., 2].any()):
                        continue
                    self.tally.add_labelled(
                        second,
                        int(weight),
                        arm,
                        buckets=rows,
                        labelled=lab[..., 0],
                        incorrect=lab[..., 1],
                        outcomes={RATED_METRIC: (lab[..., 2], lab[..., 3])},
                        replicas=idx[at],
                    )

    def _fix_thresholds(self, t: int) -> None:
        waiting = np.flatnonzero(np.isnan(self.thresholds[:, 0]))
        if waiting.size == 0:
            return
        items = self.tally.hist[waiting].sum(axis=1)
        first_done = first_step_done(
            self.step_index[waiting].tolist(),
            (t + 1 - self.step_started_s[waiting]).tolist(),
            self.plan.min_step_seconds,
        )
        ready = thresholds_ready(items, first_done)
        if ready.any():
            fix = waiting[ready]
            self.thresholds[fix] = thresholds_from_hist(self.tally.hist[fix])
            self.thresholds_from[fix] = t + 1 + PROPAGATION_S

    def _decide(self, t: int, live: IntArray) -> None:
        progress = Progress(
            weight_bp=self.weight_bp[live],
            step_index=self.step_index[live],
            step_started_s=self.step_started_s[live],
            steps_bp=self.plan.steps_bp,
        )
        now = t + 1
        # The evaluator decides on the rollout state it reads, which carries the thresholds
        # from the command that fixed them: here, once they are fixed.
        fixed = ~np.isnan(self.thresholds[live, 0])
        snap = take_snapshot(
            self.tally, progress, self.rule, float(now), live, thresholds_fixed=fixed
        )
        d = decide_many(snap, self.rule)
        if self.oracle is not None:
            crossed = self.oracle.crossed(snap, self.thresholds[live]) & (
                self.out.oracle_s[live] < 0
            )
            self.out.oracle_s[live[crossed]] = now
            self.out.oracle_canary[live[crossed]] = self.canary_served[live[crossed]]
            done = live[crossed & self.watching[live]]
            self.watching[done] = False
        deciding = self.deciding[live]
        self.code[live[deciding]] = d.code[deciding]
        # A HOLD whose code asks for no command moves nothing (action_for is None for it).
        quiet = (d.outcome == HOLD) & ~np.isin(d.code, _HOLDING)
        for j in np.flatnonzero(deciding & ~quiet):
            i = int(live[j])
            outcome, code = OUTCOMES[int(d.outcome[j])], CODES[int(d.code[j])]
            state = self.states[i]
            action = action_for(outcome, code, Mode.CANARY, state.phase)
            if action is None:
                continue
            if outcome is Outcome.ROLLBACK:
                self.out.rollback_s[i] = now
                self.out.rollback_canary[i] = self.canary_served[i]
                self.deciding[i] = False
                oracle_pending = self.oracle is not None and self.out.oracle_s[i] < 0
                self.watching[i] = self.s.harmful and oracle_pending
                continue
            try:
                new = apply_command(
                    state,
                    ControlCommand(
                        command_id=f"c{i}-{now}",
                        model="sim",
                        action=action,
                        issued_at=_at(now),
                        issued_by="evaluator",
                        expected_revision=state.revision,
                    ),
                    _at(now + PROPAGATION_S - 1),
                )
            except CommandRejectedError:  # pragma: no cover - the evaluator's commands are valid
                continue
            self.states[i] = new
            self.weight_bp[i] = new.weight_bp
            self.step_index[i] = new.step_index
            self.step_started_s[i] = _seconds(new.step_started_at)
            if new.phase is Phase.SUCCEEDED:
                self.out.finalized_s[i] = now
                self.deciding[i] = False
            elif new.weight_bp >= MAX_BP and self.out.full_s[i] < 0:
                self.out.full_s[i] = now
                if self.s.harmful:  # not caught before 100%
                    self.deciding[i] = False
                    self.watching[i] = False


def _at(seconds: float) -> datetime:
    return from_epoch_ms(round(seconds * 1000))


def _seconds(when: datetime) -> float:
    return when.timestamp()
