"""A producer transaction's evidence records, gathered so the evaluator applies them together.

A transaction writes one evidence record per cell it touched: the label joiner one per arm
(and routed second), the router one per arm it routed to. The records of one model and
rollout are numbered ``part`` 1..``parts`` (:meth:`EvidenceBuilder.build
<model_canary.streams.evidence.builder.EvidenceBuilder.build>`) and share the transaction's
source, kind and input offsets. Applied one at a time, a decision taken between two of them
sees one arm's labels without the other's (a burst that counts for one arm only: a transient
sample-ratio HOLD). :class:`Gathering` holds a transaction's records until all ``parts`` have
arrived and then hands them over together; records that are not numbered (older producers)
pass at once.

Exactly-once producers commit a transaction's records together, so all of them arrive. The
records of an unfinished transaction (an at-least-once producer stopped between two of its
records, or a record that could not be read) are handed over as they are when the same
source's next transaction for that model arrives (a producer writes one partition in order,
so the missing ones will never come), or when they have been held :data:`HOLD_MS` (a source
that never writes again).

The evaluator must not checkpoint past a held record (:meth:`Gathering.oldest`): a restart
reads it again, with the rest of its transaction.

>>> from model_canary.streams.evidence.builder import Cell, EvidenceBuilder
>>> from model_canary.streams.messages import OffsetRange
>>> b = EvidenceBuilder("labelled", source="joiner-1")
>>> for arm in ("canary", "baseline"):
...     b.add_label(Cell("iris", "ro1", "v", arm, True, 5000, 1000), 7, True)
>>> canary, baseline = b.build((OffsetRange(topic="feedback", partition=0, first=0, last=9),))
>>> g = Gathering()
>>> g.offer(canary, offset=40, now_ms=0), g.oldest()
([], 40)
>>> [(ev.arm.value, at) for ev, at in g.offer(baseline, offset=41, now_ms=0)], g.oldest()
([('canary', 40), ('baseline', 41)], None)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model_canary.streams.messages import Evidence, OffsetRange

#: The longest a transaction's first record waits for the rest (ms) before it is applied
#: without them: a transaction's records are committed together, so the rest is in the log
#: right after it, read within one or two fetches.
HOLD_MS = 10_000

#: A record and the evidence-topic offset it was read at.
Item = tuple[Evidence, int]


@dataclass(slots=True)
class _Held:
    """The records of one transaction (of one model and rollout) that have arrived."""

    offsets: tuple[OffsetRange, ...]
    parts: int
    since_ms: int
    got: dict[int, Item] = field(default_factory=dict)

    def items(self) -> list[Item]:
        return sorted(self.got.values(), key=lambda item: item[1])


class Gathering:
    """The transactions of one evidence partition with records still to come (see the
    module docstring)."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        # (source, kind, model, rollout) -> the transaction being gathered
        self._held: dict[tuple[str, str, str, str], _Held] = {}

    def __len__(self) -> int:
        """Transactions held."""
        return len(self._held)

    def offer(self, ev: Evidence, *, offset: int, now_ms: int) -> list[Item]:
        """Take ``ev`` (read at ``offset``); returns the records to apply now, in offset order:
        none while its transaction is incomplete, the whole transaction once ``ev`` completes
        it, ``ev`` alone if it is not numbered, preceded by the same source's unfinished
        transaction (if any) when ``ev`` belongs to a later one."""
        if not self._held and ev.parts <= 1:
            return [(ev, offset)]  # the common case of a one-record transaction: nothing held
        key = (ev.source, ev.kind.value, ev.model, ev.rollout_id)
        out: list[Item] = []
        held = self._held.get(key)
        if held is not None and held.offsets != ev.offsets:
            del self._held[key]  # a later transaction: the rest of that one will never come
            out += held.items()
            held = None
        if ev.parts <= 1:
            out.append((ev, offset))
            return out
        if held is None:
            held = self._held[key] = _Held(ev.offsets, ev.parts, now_ms)
        held.got[ev.part] = (ev, offset)
        if len(held.got) >= held.parts:
            del self._held[key]
            out += held.items()
        return out

    def overdue(self, now_ms: int, hold_ms: int = HOLD_MS) -> list[Item]:
        """The records of transactions held ``hold_ms`` or longer, released incomplete (in
        offset order)."""
        late = [key for key, held in self._held.items() if now_ms - held.since_ms >= hold_ms]
        out = [item for key in late for item in self._held.pop(key).items()]
        return sorted(out, key=lambda item: item[1])

    def oldest(self) -> int | None:
        """The lowest evidence offset held (a checkpoint must not cover it), or None."""
        return min(
            (at for held in self._held.values() for _ev, at in held.got.values()), default=None
        )
