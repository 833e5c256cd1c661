"""The topic catalogue: every topic name derives from one prefix, with the configuration each
topic needs.

>>> cat = TopicCatalogue("canary")
>>> cat.requests, cat.version_requests("iris", "v2")
('canary.requests', 'canary.requests.iris.v2')
>>> cat.spec(cat.rollout_state).config["cleanup.policy"]
'compact'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from model_canary.streams.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

WEEK_MS = str(7 * 24 * 3600 * 1000)
#: Largest snapshot record (a rollout's evaluator state; usually tens of kilobytes).
SNAPSHOT_MAX_BYTES = 32 * 1024 * 1024


def validate_name(kind: str, value: str) -> str:
    """Model and version names become part of topic names: letters, digits, ``_`` and ``-``.

    Dots are refused so ``prefix.requests.model.version`` can be read back unambiguously.
    """
    if not _NAME.match(value):
        raise ConfigError(f"{kind} name {value!r} is invalid: use 1-64 letters, digits, '_' or '-'")
    return value


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic to create: name, partition count and topic-level configuration."""

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class TopicCatalogue:
    """Names of the project's topics under ``prefix``."""

    prefix: str = "canary"
    partitions: int = 3

    @property
    def requests(self) -> str:
        """Inference requests from users, before routing."""
        return f"{self.prefix}.requests"

    def version_requests(self, model: str, version: str) -> str:
        """Requests routed to one version of a model (consumed by that version's workers)."""
        validate_name("model", model)
        validate_name("version", version)
        return f"{self.prefix}.requests.{model}.{version}"

    def preflight_requests(self, model: str, version: str) -> str:
        """Recorded requests replayed to one version by a pre-flight (consumed by that
        version's workers, answered on :attr:`preflight_results`, never served)."""
        validate_name("model", model)
        validate_name("version", version)
        return f"{self.prefix}.preflight.{model}.{version}"

    @property
    def preflight_results(self) -> str:
        """Answers to replayed requests: compared by their pre-flight, never served."""
        return f"{self.prefix}.preflight-results"

    @property
    def preflights(self) -> str:
        """Compacted: each pre-flight's latest record (progress, then verdict), keyed by id."""
        return f"{self.prefix}.preflights"

    @property
    def results(self) -> str:
        """Served inference results: the answers (an error result for a refused request)."""
        return f"{self.prefix}.results"

    @property
    def shadow_results(self) -> str:
        """Results of shadow copies (``served=false``): compared, never served."""
        return f"{self.prefix}.results.shadow"

    @property
    def metrics(self) -> str:
        """One metric event per answered request."""
        return f"{self.prefix}.metrics"

    @property
    def feedback(self) -> str:
        """Ground-truth labels arriving after the fact, keyed by request id."""
        return f"{self.prefix}.feedback"

    @property
    def feedback_rekeyed(self) -> str:
        """Internal: feedback that arrived with another key, re-keyed by its request id by
        the label joiner (so it meets its predictions in the same partition)."""
        return f"{self.prefix}.feedback-rekeyed"

    @property
    def evidence(self) -> str:
        """The evaluator's input: evidence records of routers, workers and label joiners,
        keyed by model (all of one model's evidence on one partition, in order)."""
        return f"{self.prefix}.evidence"

    @property
    def predictions(self) -> str:
        """Each answered request's prediction in a rollout with a label-based metric, keyed
        by request id, for the label joiner."""
        return f"{self.prefix}.predictions"

    @property
    def evaluator_state(self) -> str:
        """Compacted: the evaluator's snapshots, one per model, on the evidence partition's
        number (so a restarted evaluator restores in seconds)."""
        return f"{self.prefix}.evaluator-state"

    @property
    def joiner_state(self) -> str:
        """Compacted: the label joiner's snapshot chunks and changes, one partition per
        predictions partition."""
        return f"{self.prefix}.joiner-state"

    @property
    def control(self) -> str:
        """Commands from operators and the evaluator's decisions."""
        return f"{self.prefix}.control"

    @property
    def rollout_state(self) -> str:
        """Compacted: the latest state of each rollout, keyed by model."""
        return f"{self.prefix}.rollout-state"

    @property
    def events(self) -> str:
        """Audit events: applied commands, rejections with their reasons."""
        return f"{self.prefix}.events"

    @property
    def dead_letters(self) -> str:
        """Messages no agent could process, with the reason in headers."""
        return f"{self.prefix}.dead-letters"

    def spec(self, name: str) -> TopicSpec:
        """The specification of one catalogue topic (version request topics included)."""
        single = {self.control, self.rollout_state, self.events}
        config: dict[str, str] = {}
        if name in (self.rollout_state, self.preflights):
            # Compaction keeps the latest state per model forever: a restarted router
            # restores every rollout from it.
            config = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}
        elif name in (self.evaluator_state, self.joiner_state):
            # Snapshots are rewritten every few seconds: segments roll each minute so the
            # log cleaner keeps only the latest, and a restart reads little.
            config = {
                "cleanup.policy": "compact",
                "min.cleanable.dirty.ratio": "0.01",
                "segment.ms": "60000",
                "delete.retention.ms": "60000",
                "max.compaction.lag.ms": "120000",
                "max.message.bytes": str(SNAPSHOT_MAX_BYTES),
            }
        elif name in (self.evidence, self.predictions):
            config = {"retention.ms": WEEK_MS}
        elif name == self.dead_letters:
            config = {"retention.ms": str(4 * int(WEEK_MS))}
        elif name in (self.control, self.events):
            config = {"retention.ms": str(8 * int(WEEK_MS))}
        # Control-plane topics have one partition: commands for all models are totally ordered.
        partitions = 1 if name in single else self.partitions
        return TopicSpec(name, partitions, MappingProxyType(config))

    def core_specs(self) -> list[TopicSpec]:
        """Every topic that does not depend on a model version."""
        names = [
            self.requests,
            self.results,
            self.shadow_results,
            self.metrics,
            self.feedback,
            self.feedback_rekeyed,
            self.evidence,
            self.predictions,
            self.evaluator_state,
            self.joiner_state,
            self.control,
            self.rollout_state,
            self.events,
            self.dead_letters,
            self.preflight_results,
            self.preflights,
        ]
        return [self.spec(n) for n in names]

    def version_specs(self, model: str, *versions: str) -> list[TopicSpec]:
        """Each version's request topic and pre-flight topic."""
        names = [
            name
            for v in versions
            for name in (self.version_requests(model, v), self.preflight_requests(model, v))
        ]
        return [self.spec(n) for n in names]
