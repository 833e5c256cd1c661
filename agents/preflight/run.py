"""A pre-flight from start to verdict: plan the replay, replay (resumably), collect the answers,
judge them with the rollout's statistics, record the verdict, write the report.

>>> options = PreflightOptions(model="iris", candidate="v2")
>>> options.sample_bp, options.baseline_mode.value
(10000, 'replay')
>>> # outcome = run_preflight(settings, options); sys.exit(outcome.verdict.exit_code)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from model_canary.agents.audit.reader import RangeReader
from model_canary.agents.kafka.admin import Admin
from model_canary.agents.kafka.state_view import StateView
from model_canary.agents.preflight import store
from model_canary.agents.preflight.collect import Collector, read_feedback, read_recorded
from model_canary.agents.preflight.replayer import Replayer
from model_canary.agents.preflight.report import write_report
from model_canary.streams.enums import BaselineMode, PreflightStatus
from model_canary.streams.errors import CanaryError, ConfigError
from model_canary.streams.messages import EPOCH, OffsetRange, Preflight, utc_now
from model_canary.streams.plan import RolloutPlan, parse_plan
from model_canary.streams.preflight.judge import Observed, PreflightVerdict, judge
from model_canary.streams.preflight.replay import check_id, new_preflight_id
from model_canary.streams.record_base import MAX_BP
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)

#: Default bound on the requests a pre-flight replays.
DEFAULT_MAX_REQUESTS = 100_000
#: Default window of recorded traffic replayed (seconds back from now).
DEFAULT_SINCE_S = 6 * 3600.0
#: Default cap on the replay rate (requests a second), so live traffic keeps its workers.
DEFAULT_RATE = 200.0


class PreflightError(CanaryError):
    """A pre-flight that cannot run or finish: no such model, no worker answering, a
    resumed id that names another candidate."""


@dataclass(frozen=True, slots=True)
class PreflightOptions:
    """What ``canary preflight`` was asked (see its ``--help``)."""

    model: str
    candidate: str
    baseline: str | None = None
    #: Replay the requests recorded since then (default: :data:`DEFAULT_SINCE_S` ago).
    since: datetime | None = None
    from_offsets: Mapping[int, int] | None = None
    sample_bp: int = MAX_BP
    rate: float = DEFAULT_RATE
    max_requests: int = DEFAULT_MAX_REQUESTS
    baseline_mode: BaselineMode = BaselineMode.REPLAY
    min_requests: int | None = None
    plan: RolloutPlan | None = None
    preflight_id: str | None = None
    report: Path | None = None
    #: Give up waiting for answers after this long without a new one (seconds).
    answer_timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class PreflightOutcome:
    """The pre-flight's final record, its verdict and where its report is."""

    record: Preflight
    verdict: PreflightVerdict
    report: Path | None


Progress = Callable[[str], None]


def run_preflight(
    settings: Settings,
    options: PreflightOptions,
    *,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> PreflightOutcome:
    """Run (or resume) a pre-flight to its verdict (module docs)."""
    say = progress or (lambda _text: None)
    stop = stop or threading.Event()
    catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
    job = _job(settings, options, catalogue)
    plan = _plan(options, job)
    Admin(settings).ensure_topics(
        catalogue.core_specs()
        + catalogue.version_specs(job.model, job.baseline_version, job.candidate_version)
    )
    say(
        f"pre-flight {job.preflight_id}: {job.model} {job.candidate_version} against "
        f"{job.baseline_version} ({job.baseline_mode.value} baseline), "
        f"{sum(r.last - r.first + 1 for r in job.ranges)} recorded messages in range"
    )
    replayer = Replayer(settings, job)
    failure: list[BaseException] = []
    halt = threading.Event()  # stops the replay (it commits what it replayed: resumable)

    def replay() -> None:
        try:
            replayer.run(halt)
        except BaseException as exc:  # reported by the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=replay, name="preflight-replay", daemon=True)
    thread.start()
    collector = Collector(settings, job)
    try:
        _collect(collector, replayer, thread, job, options, failure, stop, say)
        if failure:
            raise failure[0]
        if stop.is_set():
            raise PreflightError(f"pre-flight {job.preflight_id} stopped; resume it with --id")
        seen = _observed(settings, collector, job)
    finally:
        halt.set()
        thread.join(timeout=30)
        collector.close()
    min_requests = options.min_requests if options.min_requests is not None else 0
    verdict = judge(
        seen,
        plan,
        min_requests=min_requests,
        recorded_baseline=job.baseline_mode is BaselineMode.RECORDED,
        rollout_id=job.preflight_id,
    )
    report = options.report
    record = replace(
        job,
        status=verdict.status,
        replayed=max(replayer.committed, len(collector.replayed)),
        answered=verdict.answered,
        labelled=verdict.labelled,
        reason=verdict.reason,
        evidence=verdict.evidence,
        agreement=verdict.agreement,
        plan_json=verdict.plan.to_json(),
        report=str(report) if report else None,
        updated_at=utc_now(),
    )
    if report is not None:
        write_report(report, record, verdict, seen)
    store.publish(settings, record)
    return PreflightOutcome(record, verdict, report)


def _job(settings: Settings, options: PreflightOptions, catalogue: TopicCatalogue) -> Preflight:
    """The pre-flight's record: the stored one when resuming, else a new one."""
    if options.preflight_id is not None:
        check_id(options.preflight_id)
        stored = store.records(settings).get(options.preflight_id)
        if stored is not None:
            if (stored.model, stored.candidate_version) != (options.model, options.candidate):
                raise PreflightError(
                    f"pre-flight {stored.preflight_id} tests {stored.model} "
                    f"{stored.candidate_version}, not {options.model} {options.candidate}"
                )
            if stored.finished:
                log.info("pre-flight %s finished already; judging again", stored.preflight_id)
            return replace(stored, status=PreflightStatus.REPLAYING)
    baseline = options.baseline or _stable_version(settings, options.model)
    if baseline == options.candidate:
        raise ConfigError(f"the candidate {options.candidate} is the baseline itself")
    now = utc_now()
    preflight_id = options.preflight_id or new_preflight_id(options.model, options.candidate, now)
    reader = RangeReader(settings, "canary-preflight-plan")
    try:
        topic = catalogue.requests
        ends = reader.ends([topic])
        if options.from_offsets is not None:
            starts = {(topic, p): o for p, o in options.from_offsets.items()}
            unknown = sorted(p for _t, p in starts if (topic, p) not in ends)
            if unknown:
                raise ConfigError(f"--from-offsets: {topic} has no partition {unknown[0]}")
            window_start = EPOCH
        else:
            since = options.since or now - timedelta(seconds=DEFAULT_SINCE_S)
            starts = reader.starts([topic], since)
            window_start = since
    finally:
        reader.close()
    ranges = tuple(
        OffsetRange(topic=t, partition=p, first=starts.get((t, p), end), last=end - 1)
        for (t, p), end in sorted(ends.items())
    )
    record = Preflight(
        preflight_id=preflight_id,
        model=options.model,
        baseline_version=baseline,
        candidate_version=options.candidate,
        status=PreflightStatus.REPLAYING,
        baseline_mode=options.baseline_mode,
        sample_bp=options.sample_bp,
        rate=options.rate,
        max_requests=options.max_requests,
        ranges=ranges,
        window_start=window_start,
        plan_json=options.plan.to_json() if options.plan else None,
        started_at=now,
        updated_at=now,
    )
    store.publish(settings, record)
    return record


def _plan(options: PreflightOptions, job: Preflight) -> RolloutPlan:
    if options.plan is not None:
        plan = options.plan
    elif job.plan_json:
        plan = RolloutPlan.from_json(job.plan_json)
    else:
        plan = parse_plan({"model": job.model, "canary": job.candidate_version})
    return replace(plan, baseline=job.baseline_version, canary=job.candidate_version)


def _stable_version(settings: Settings, model: str) -> str:
    view = StateView(settings, client_id="canary-preflight-state")
    try:
        view.catch_up()
        state = view.get(model)
    finally:
        view.close()
    if state is None:
        raise PreflightError(
            f"model {model!r} is not registered: register it (canary model register) or give "
            "--baseline"
        )
    return state.stable_version


def _collect(
    collector: Collector,
    replayer: Replayer,
    thread: threading.Thread,
    job: Preflight,
    options: PreflightOptions,
    failure: list[BaseException],
    stop: threading.Event,
    say: Progress,
) -> None:
    """Read answers until the replay is done and every replayed request is answered, or no
    answer came for ``answer_timeout_s`` (the verdict then counts the missing as errors)."""
    replay_baseline = job.baseline_mode is BaselineMode.REPLAY
    last_change, last_seen, last_said = time.monotonic(), -1, 0.0
    while not stop.is_set() and not failure:
        # Whether the replay had ended before this poll: then the poll sees all it wrote.
        done = replayer.done and not thread.is_alive()
        collector.poll()
        seen = len(collector.candidate) + len(collector.baseline)
        missing = collector.missing(replayed_baseline=replay_baseline)
        now = time.monotonic()
        if seen != last_seen:
            last_seen, last_change = seen, now
        if now - last_said >= 5 or (done and not missing):
            last_said = now
            say(
                f"replayed {replayer.committed}, answers: candidate {len(collector.candidate)}"
                + (f", baseline {len(collector.baseline)}" if replay_baseline else "")
            )
        if done and not missing:
            return
        if now - last_change > options.answer_timeout_s:
            if not collector.candidate:
                raise PreflightError(
                    f"no answer from a worker of {job.model} {job.candidate_version} in "
                    f"{options.answer_timeout_s:g}s: is 'canary worker --model {job.model} "
                    f"--version {job.candidate_version} ...' running?"
                )
            if done:
                say(f"{missing} answers still missing after {options.answer_timeout_s:g}s")
                return
        time.sleep(0.5)


def _observed(settings: Settings, collector: Collector, job: Preflight) -> Observed:
    order = collector.order
    since = job.window_start if job.window_start > EPOCH else None
    feedback = read_feedback(settings, since, order, job.model)
    baseline = collector.baseline
    if job.baseline_mode is BaselineMode.RECORDED:
        baseline = read_recorded(settings, since, order, job.baseline_version)
    return Observed(collector.candidate, baseline, feedback, order, collector.replayed)


__all__ = [
    "DEFAULT_MAX_REQUESTS",
    "DEFAULT_RATE",
    "DEFAULT_SINCE_S",
    "PreflightError",
    "PreflightOptions",
    "PreflightOutcome",
    "run_preflight",
]
