"""Evidence on the wire: one message per record, or one per transaction and model.

A producer transaction writes one :class:`~model_canary.streams.messages.Evidence` per cell
it touched (the router one per arm, a worker serving the baseline and the control one per
arm). Written alone (``records``, the format every reader has always read), each is a
message of its own. Written as an :class:`~model_canary.streams.messages.EvidenceSet`
(``sets``: ``CANARY_EVIDENCE_FORMAT=sets``), the transaction's records of one model are one
message, keyed by the model as before: the evaluator reads one message per transaction and
model, not one per cell. Readers take either (:func:`decode_evidence`), so the evaluator is
upgraded first and the producers switch to sets after it.

>>> from model_canary.streams.evidence.builder import Cell, EvidenceBuilder
>>> b = EvidenceBuilder("routed", source="router-1")
>>> for arm in ("canary", "baseline"):
...     b.add_routed(Cell("iris", "ro1", "", arm, True, 500, 1000), [7, 8])
>>> records = b.build(())
>>> [key for key, _ in encode_evidence(records, sets=False)]
[b'iris', b'iris']
>>> [(key, value)] = encode_evidence(records, sets=True)
>>> key, [(ev.arm.value, ev.part) for ev in decode_evidence(value)[0]], decode_evidence(value)[1]
(b'iris', [('canary', 1), ('baseline', 2)], True)
"""

from __future__ import annotations

from collections.abc import Sequence

from model_canary.streams.codec.avro import codec_for, decode_any
from model_canary.streams.errors import InvalidRecordError
from model_canary.streams.messages import Evidence, EvidenceSet

#: The values of ``CANARY_EVIDENCE_FORMAT`` (:attr:`Settings.evidence_format
#: <model_canary.streams.settings.Settings.evidence_format>`).
RECORDS, SETS = "records", "sets"
EVIDENCE_FORMATS = (RECORDS, SETS)


def evidence_sets(records: Sequence[Evidence]) -> list[EvidenceSet]:
    """One transaction's ``records`` as one set per model (models in the order they first
    appear, records in their order).

    >>> ev = Evidence(kind="routed", model="iris", rollout_id="ro1", arm="canary",
    ...               second=1000, source="r1")
    >>> [len(s.records) for s in evidence_sets([ev, ev])]
    [2]
    """
    by_model: dict[str, list[Evidence]] = {}
    for ev in records:
        by_model.setdefault(ev.model, []).append(ev)
    return [EvidenceSet(records=tuple(evs)) for evs in by_model.values()]


def encode_evidence(records: Sequence[Evidence], *, sets: bool) -> list[tuple[bytes, bytes]]:
    """The messages (key, value) that carry one transaction's ``records``: one per record,
    or with ``sets`` one :class:`EvidenceSet` per model; keyed by the model either way."""
    if sets:
        codec = codec_for(EvidenceSet)
        return [(s.model.encode(), codec.encode(s)) for s in evidence_sets(records)]
    single = codec_for(Evidence)
    return [(ev.model.encode(), single.encode(ev)) for ev in records]


def decode_evidence(data: bytes) -> tuple[tuple[Evidence, ...], bool]:
    """The records of an evidence message, and whether it was a set (an
    :class:`EvidenceSet`) rather than a record written alone. Raises only
    :class:`~model_canary.streams.errors.DecodeError` subclasses (a record of another
    type: :class:`~model_canary.streams.errors.InvalidRecordError`).

    >>> from model_canary.streams.messages import Feedback, EPOCH
    >>> decode_evidence(codec_for(Feedback).encode(
    ...     Feedback(request_id="r", model="iris", label="x", observed_at=EPOCH)))
    Traceback (most recent call last):
    ...
    model_canary.streams.errors.InvalidRecordError: not evidence: a Feedback
    """
    record = decode_any(data)
    if isinstance(record, Evidence):
        return (record,), False
    if isinstance(record, EvidenceSet):
        return record.records, True
    raise InvalidRecordError(f"not evidence: a {type(record).__name__}")
