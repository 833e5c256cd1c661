"""The evaluator as a faust-streaming app.

* One agent (concurrency 1) reads the evidence topic, keyed by model: a few records per
  producer transaction, whatever the request rate. Each record is applied to its rollout's
  :class:`~model_canary.streams.evidence.state.RolloutEvidence`, which counts it once however
  often it is read, so faust's offset handling (its commits stall behind transactional input,
  faust-streaming issue #606) can never count anything twice.
* A timer decides on the clock: for every rollout whose evidence this instance owns, it
  settles the complete seconds, runs the decision rule and publishes the decision (with the
  evidence offsets it rests on) and, where one is due, a command.
* A second timer checkpoints: per evidence partition, the snapshots of the rollouts that
  changed go to the compacted evaluator-state topic in one transaction, then the partition's
  offset is committed for the consumer group (so the group's lag is the true lag). A
  restarted or reassigned instance restores the last checkpoint (a few records per model,
  whatever the rollout's history) and reads on from there.
* Kafka calls that block (checkpoints, restores, publishing decisions) run in threads of
  their own, never on the event loop; the rollout states are followed by a thread too.
* SIGTERM: faust stops the agent, the last checkpoint is written, and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import faust
from faust.types import TP

from model_canary.agents import metrics
from model_canary.agents.evaluator.brain import Applied, CheckpointData, Evaluator, NeedsRollout
from model_canary.agents.evaluator.decisions import DecisionSink
from model_canary.agents.evaluator.security import faust_credentials
from model_canary.agents.evaluator.store import StateStore
from model_canary.agents.evaluator.transport import SCHEME, QuietMonitor
from model_canary.agents.evaluator.view import FollowedView
from model_canary.streams.messages import utc_now
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a record of a rollout the rollout-state topic has not shown yet waits for it
#: before it is taken for an older rollout's late evidence.
ROLLOUT_WAIT_S = 10.0
#: Least time between two evaluations (evidence arrives in bursts, one per transaction).
MIN_SPACING_S = 0.1


@dataclass(frozen=True, slots=True)
class EvaluatorOptions:
    interval_s: float = 1.0  # between decisions
    checkpoint_s: float = 2.0  # between checkpoints


def broker_urls(settings: Settings) -> list[str]:
    """faust's broker URLs: the read_committed transport (see :mod:`.transport`)."""
    return [f"{SCHEME}://{host.strip()}" for host in settings.bootstrap_servers.split(",")]


def build_app(
    settings: Settings,
    options: EvaluatorOptions | None = None,
    *,
    instance: str = "evaluator-1",
    on_start: Callable[[], None] | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> faust.App:
    """The evaluator app for ``settings`` (nothing connects until the worker starts);
    ``on_start`` runs once the app runs, ``on_shutdown`` (off the event loop) when it stops,
    after the last checkpoint."""
    o = options or EvaluatorOptions()
    catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
    # faust's data folder, under the state folder rather than the working directory.
    datadir = settings.state_dir / "evaluator" / f"{settings.topic_prefix}-evaluator"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.topic_prefix}-evaluator",
        broker=broker_urls(settings),
        broker_credentials=faust_credentials(settings.extra_config),
        # The evaluator's exactly-once comes from its state (idempotent by source offsets)
        # and its checkpoints, not from faust's transactions.
        processing_guarantee="at_least_once",
        store="memory://",
        topic_partitions=settings.partitions,
        table_standby_replicas=0,
        # Static membership: a restarted instance takes its partitions back at once (a
        # crashed one that is not restarted loses them to the others after the session).
        consumer_group_instance_id=f"{settings.topic_prefix}-evaluator-{instance}",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        web_enabled=False,
        datadir=str(datadir),
        consumer_auto_offset_reset="earliest",
        # No per-record statistics for a web page the evaluator does not serve.
        Monitor=QuietMonitor,
    )
    # acks=False: faust neither tracks nor commits this topic's offsets; the checkpoints do.
    evidence = app.topic(
        catalogue.evidence, value_serializer="raw", key_serializer="raw", acks=False
    )
    runtime = Runtime(settings, app, catalogue.evidence, on_shutdown)

    @app.agent(evidence, concurrency=1)
    async def on_evidence(stream: Any) -> None:
        async for event in stream.events():
            try:
                await runtime.handle(event.message)
            except Exception:  # never stop on input
                log.exception("evidence at offset %s failed", event.message.offset)

    if on_start is not None:

        @app.task  # type: ignore[untyped-decorator]
        async def started() -> None:
            on_start()

    @app.task  # type: ignore[untyped-decorator]
    async def decide() -> None:
        # Every interval, and as soon as evidence completes a second (at most every
        # MIN_SPACING_S): a decision never waits for the clock when its evidence is in.
        while not app.should_stop:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.due.wait(), timeout=o.interval_s)
            runtime.due.clear()
            began = time.monotonic()
            try:
                await runtime.decide()
            except Exception:
                log.exception("evaluation failed")
            await asyncio.sleep(max(0.0, MIN_SPACING_S - (time.monotonic() - began)))

    @app.timer(interval=o.checkpoint_s)  # type: ignore[untyped-decorator]
    async def checkpoint() -> None:
        await runtime.checkpoint_all()

    # (mode's signal types want a ``signal`` keyword that the handlers take in ``**_kw``.)
    app.on_partitions_assigned.connect(cast(Any, runtime.on_assigned))
    app.on_partitions_revoked.connect(cast(Any, runtime.on_revoked))
    app.on_before_shutdown.connect(cast(Any, runtime.on_shutdown))
    return app


class Runtime:
    """The glue between faust's callbacks and :class:`Evaluator` (see the module)."""

    def __init__(
        self,
        settings: Settings,
        app: faust.App,
        topic: str,
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self._on_shutdown = on_shutdown
        self.topic = topic
        self.view = FollowedView(settings)
        self.sink = DecisionSink(settings)
        self.store = StateStore(settings)
        self.brain = Evaluator(settings.topic_prefix, self.view, self.sink)
        self._loading: dict[int, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        # One thread for checkpoints and restores, one for decisions: a slow checkpoint
        # never delays a rollback.
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="evaluator-store")
        # Restores run side by side (each fences its partition's previous writer first).
        self._load_threads = ThreadPoolExecutor(
            max(1, settings.partitions), thread_name_prefix="evaluator-restore"
        )
        self._decide_thread = ThreadPoolExecutor(1, thread_name_prefix="evaluator-decide")
        self._stopping = False
        self.due = asyncio.Event()  # an evaluation is due (evidence completed a second)
        self.view.start()

    async def _off_loop(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    # -- partitions ------------------------------------------------------------------------
    async def on_assigned(self, _sender: Any, *args: Any, **_kw: Any) -> None:
        assigned: set[TP] = args[0]
        for tp in assigned:
            if tp.topic == self.topic and tp.partition not in self._loading:
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._loading[tp.partition] = fut
                task = asyncio.ensure_future(self._load(tp.partition, fut))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _load(self, partition: int, fut: asyncio.Future[None]) -> None:
        began = time.monotonic()
        try:
            checkpoint = await self._off_loop(self._load_threads, self.store.load, partition)
        except Exception as exc:
            log.exception("restoring evidence partition %d failed", partition)
            if not fut.done():
                fut.set_exception(exc)
            return
        if self._loading.get(partition) is fut:
            self.brain.install(partition, checkpoint)
            log.info("evidence partition %d restored in %.2fs", partition, time.monotonic() - began)
        if not fut.done():
            fut.set_result(None)

    async def on_revoked(self, _sender: Any, *args: Any, **_kw: Any) -> None:
        revoked: set[TP] = args[0]
        for tp in revoked:
            if tp.topic != self.topic:
                continue
            fut = self._loading.pop(tp.partition, None)
            if fut is not None and fut.done() and fut.exception() is None:
                await self._checkpoint(tp.partition, commit=True)
            self.brain.revoke(tp.partition)
            await self._off_loop(self._store_thread, self.store.release, tp.partition)

    async def on_shutdown(self, _sender: Any, *_args: Any, **_kw: Any) -> None:
        self._stopping = True
        await self.checkpoint_all()
        if self._on_shutdown is not None:
            await self._off_loop(self._decide_thread, self._on_shutdown)
        self.view.stop()
        await self._off_loop(self._decide_thread, self.sink.close)
        await self._off_loop(self._store_thread, self.store.close)
        self._store_thread.shutdown(wait=False)
        self._load_threads.shutdown(wait=False)
        self._decide_thread.shutdown(wait=False)

    # -- evidence --------------------------------------------------------------------------
    async def handle(self, message: Any) -> None:
        partition = message.partition
        fut = self._loading.get(partition)
        if fut is None:  # assigned without the signal (should not happen): load it now
            fut = asyncio.get_running_loop().create_future()
            self._loading[partition] = fut
            await self._load(partition, fut)
        await fut
        source = (message.topic, partition, message.offset)
        args = (message.value, source, message.key, message.headers)
        left_out: frozenset[tuple[str, str]] = frozenset()
        result = self.brain.on_evidence(*args, now_ms=int(time.time() * 1000))
        while isinstance(result, NeedsRollout):
            state = await self.view.wait_for(result.model, result.rollout_id, ROLLOUT_WAIT_S)
            if state is None:
                log.info(
                    "evidence of %s rollout %s left out: not the model's current rollout",
                    result.model,
                    result.rollout_id,
                )
                left_out |= {(result.model, result.rollout_id)}
            result = self.brain.on_evidence(
                *args, now_ms=int(time.time() * 1000), left_out=left_out
            )
        if isinstance(result, Applied) and result.released:
            self.due.set()

    # -- deciding --------------------------------------------------------------------------
    async def decide(self) -> None:
        if not self.view.ready.is_set() or self._stopping:
            return
        for model, revision, emitted in self.brain.decide(utc_now()):
            try:
                await self._off_loop(self._decide_thread, self.sink.publish, emitted)
            except Exception:
                log.exception("publishing the decision on %s failed", model)
                continue
            self.brain.published(model, revision, emitted)

    # -- checkpoints -----------------------------------------------------------------------
    async def checkpoint_all(self) -> None:
        for partition, fut in list(self._loading.items()):
            if fut.done() and fut.exception() is None:
                await self._checkpoint(partition, commit=True)

    async def _checkpoint(self, partition: int, *, commit: bool) -> None:
        tp = TP(self.topic, partition)
        data = self.brain.checkpoint(partition)
        if data is None:
            self._report_lag(tp, partition)
            return
        began = time.monotonic()
        try:
            await self._off_loop(self._store_thread, self._write, data)
        except Exception as exc:
            log.error("checkpoint of evidence partition %d failed: %s", partition, exc)
            self.brain.checkpoint_failed(data)
            return
        self.brain.checkpointed(data)
        metrics.CHECKPOINT_SECONDS.observe(time.monotonic() - began)
        if commit:
            await self._commit(tp, data)
        self._report_lag(tp, partition)

    def _write(self, data: CheckpointData) -> None:
        """Serialize the checkpoint's snapshots and write them (in the store's thread: a large
        tally takes a while to compress, and the loop goes on applying evidence meanwhile)."""
        self.store.write(data.partition, data.position, data.snapshots, data.dead)

    async def _commit(self, tp: TP, data: CheckpointData) -> None:
        # faust commits nothing for this topic (acks=False): the group's offset is the
        # checkpoint's, committed once the checkpoint is written.
        try:
            consumer: Any = self.app.consumer
            await consumer._commit({tp: data.position})
        except Exception as exc:  # a rebalance under way: the next checkpoint commits
            log.info("offset %d of %s not committed: %s", data.position, tp, exc)

    def _report_lag(self, tp: TP, partition: int) -> None:
        part = self.brain.partitions.get(partition)
        try:
            high = self.app.consumer.highwater(tp)
        except Exception:
            return
        if part is not None and high is not None:
            lag = max(0, int(high) - max(part.covered, part.processed + 1))
            metrics.LAG.labels("evaluator", tp.topic, str(partition)).set(lag)
