"""The label join: predictions wait for their request's ground truth, labels that came first
wait (briefly) for their predictions, and whatever joins or expires is forgotten at once.

One :class:`LabelJoin` per input partition (predictions and feedback are both keyed by
request id, so a request's prediction and label meet in the same partition). Memory is
bounded: a prediction is kept until its label arrives or its rollout's label window passes
(``expires_s``); a label that came before its prediction is kept for
:data:`EARLY_LABEL_S`.

Labels are any feedback (:class:`~model_canary.streams.outcomes.expr.Outcome`: a class
label, a numeric value, attributes; a bare text is a class label): a joined prediction is
judged for accuracy when the feedback has a label, and by each of the plan's outcome metrics
(:meth:`Joined.judge`).

A shadow pair has two predictions (the served baseline answer and the mirrored canary
one, ``answers == 2``): the label joins both, whichever order they come in.

Every change is also recorded as an operation (:meth:`LabelJoin.take_changes`) so the
joiner can write it to its changelog in the transaction that made it, and a restarted
joiner rebuilds the same state from a snapshot and the changes since
(:meth:`LabelJoin.apply_changes`, :func:`dump_chunks`, :func:`load_chunks`).

>>> join = LabelJoin()
>>> w = Waiting("iris", "ro1", "v2", "canary", True, 100, 1000, 7, 1, "setosa", 90_000)
>>> join.add_prediction("r1", w, now_s=1001)
[]
>>> [(j.waiting.arm, j.correct) for j in join.add_label("r1", "setosa", now_s=1002)]
[('canary', True)]
>>> join.add_prediction("r2", w._replace(prediction="4.5"), now_s=1001)
[]
>>> [j] = join.add_label("r2", Outcome(value=3.0), now_s=1002)  # no label: not for accuracy
>>> j.correct, j.judge({"off": condition("abs(value - prediction) > 1")})
(None, (None, {'off': True}))
>>> len(join), join.add_label("r1", "setosa", now_s=1003)  # forgotten; a repeat joins nothing
(0, [])
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from model_canary.streams.errors import EvidenceError
from model_canary.streams.outcomes.expr import Condition, Outcome
from model_canary.streams.outcomes.metrics import condition as condition
from model_canary.streams.outcomes.metrics import judge

#: How long a label that arrived before its prediction waits for it (seconds).
EARLY_LABEL_S = 300
#: Default label window: predictions wait this long for their label (seconds, 24 h).
DEFAULT_LABEL_WINDOW_S = 24 * 3600
JOIN_VERSION = 1


class Waiting(NamedTuple):
    """A prediction waiting for its label: its cell, cohort bucket, how many predictions the
    request has (2 for a shadow pair), the predicted label and when it expires (epoch s)."""

    model: str
    rollout_id: str
    version: str
    arm: str
    served: bool
    weight_bp: int
    second: int
    bucket: int
    answers: int
    prediction: str
    expires_s: int


class EarlyLabel(NamedTuple):
    """Feedback kept for predictions still to come: the arms it joined already."""

    label: Outcome
    expires_s: int
    joined: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Joined:
    """A prediction joined with its feedback."""

    waiting: Waiting
    label: Outcome

    @property
    def correct(self) -> bool | None:
        """Whether the feedback's class label is the prediction (None: it has no label)."""
        return self.waiting.prediction == self.label.label if self.label.label else None

    def judge(self, conditions: Mapping[str, Condition]) -> tuple[bool | None, dict[str, bool]]:
        """``(correct, {outcome metric: bad})``: accuracy's judgement and each outcome
        metric's (those the feedback says nothing about left out), the prediction read as
        the model's answer."""
        if not conditions:
            return self.correct, {}
        seen = replace(self.label, prediction=self.waiting.prediction)
        return self.correct, judge(conditions, seen)


def _feedback(label: str | Outcome) -> Outcome:
    return label if isinstance(label, Outcome) else Outcome(label=label)


def _label_op(rid: str, early: EarlyLabel) -> list[Any]:
    """A changelog operation keeping ``early``; the value and attributes follow the fields
    of the first version, so operations written before them still read."""
    fb = early.label
    op: list[Any] = ["l", rid, fb.label, early.expires_s, list(early.joined)]
    if fb.value is not None or fb.attributes:
        op += [fb.value, dict(fb.attributes)]
    return op


def _early(op: list[Any]) -> EarlyLabel:
    value = op[5] if len(op) > 5 else None
    attributes = op[6] if len(op) > 6 else {}
    if not (
        isinstance(op[2], str)
        and (value is None or isinstance(value, int | float))
        and isinstance(attributes, dict)
    ):
        raise EvidenceError(f"label-join operation with a bad label: {op[:3]}")
    fb = Outcome(op[2], None if value is None else float(value), attributes)
    return EarlyLabel(fb, int(op[3]), tuple(op[4]))


class LabelJoin:
    """Predictions and early labels of one partition (see the module docstring)."""

    __slots__ = (
        "_changes",
        "_due_by_minute",
        "early_label_s",
        "labels",
        "predictions",
        "recording",
    )

    def __init__(self, early_label_s: int = EARLY_LABEL_S) -> None:
        self.early_label_s = early_label_s
        self.predictions: dict[str, list[Waiting]] = {}
        self.labels: dict[str, EarlyLabel] = {}
        # Request ids by the minute their entry expires: a joined entry leaves its minute at
        # once, so nothing of it stays behind.
        self._due_by_minute: dict[int, set[str]] = {}
        self._changes: list[list[Any]] = []
        self.recording = True

    def __len__(self) -> int:
        return len(self.predictions) + len(self.labels)

    # -- joining ---------------------------------------------------------------------------
    def add_prediction(self, rid: str, waiting: Waiting, now_s: int) -> list[Joined]:
        """Keep ``waiting`` for its label; returns it joined when its label came first."""
        early = self.labels.get(rid)
        if early is not None:
            if waiting.arm in early.joined:
                return []  # this arm's prediction was joined already
            joined = (*early.joined, waiting.arm)
            if len(joined) >= waiting.answers:
                self._forget(rid)
            else:
                self._set_label(rid, EarlyLabel(early.label, early.expires_s, joined))
            return [Joined(waiting, early.label)]
        if waiting.expires_s <= now_s:
            return []  # its label window has passed already
        waiting_list = self.predictions.setdefault(rid, [])
        if any(w.arm == waiting.arm for w in waiting_list):
            return []
        waiting_list.append(waiting)
        self._due_by_minute.setdefault(waiting.expires_s // 60, set()).add(rid)
        if self.recording:
            self._changes.append(["p", rid, *waiting])
        return []

    def add_label(
        self, rid: str, label: str | Outcome, now_s: int, *, keep: bool = True
    ) -> list[Joined]:
        """Join ``label`` (feedback; a text is a class label) with the request's waiting
        predictions; when none (or not all of a shadow pair's) have arrived and ``keep``,
        keep it for them."""
        label = _feedback(label)
        waiting = self.predictions.get(rid)
        if waiting is None:
            if keep and rid not in self.labels:
                self._set_label(rid, EarlyLabel(label, now_s + self.early_label_s, ()))
            return []
        joined = [Joined(w, label) for w in waiting]
        expected = max(w.answers for w in waiting)
        self._forget(rid)
        if len(waiting) < expected:
            arms = tuple(w.arm for w in waiting)
            self._set_label(rid, EarlyLabel(label, now_s + self.early_label_s, arms))
        return joined

    def expire(self, now_s: int) -> int:
        """Forget predictions and labels whose time has passed; returns how many requests."""
        n = 0
        for minute in sorted(m for m in self._due_by_minute if m * 60 <= now_s):
            rids = self._due_by_minute[minute]
            for rid in [r for r in rids if self._due(r, now_s)]:
                self._forget(rid, record=False)
                n += 1
            if (minute + 1) * 60 <= now_s or not rids:
                self._due_by_minute.pop(minute, None)
        return n

    def _due(self, rid: str, now_s: int) -> bool:
        waiting = self.predictions.get(rid)
        if waiting is not None:
            return max(w.expires_s for w in waiting) <= now_s
        label = self.labels.get(rid)
        return label is not None and label.expires_s <= now_s

    def _set_label(self, rid: str, early: EarlyLabel) -> None:
        self._unschedule(rid)
        self.predictions.pop(rid, None)
        self.labels[rid] = early
        self._due_by_minute.setdefault(early.expires_s // 60, set()).add(rid)
        if self.recording:
            self._changes.append(_label_op(rid, early))

    def _unschedule(self, rid: str) -> None:
        minutes = {w.expires_s // 60 for w in self.predictions.get(rid, ())}
        label = self.labels.get(rid)
        if label is not None:
            minutes.add(label.expires_s // 60)
        for minute in minutes:
            rids = self._due_by_minute.get(minute)
            if rids is not None:
                rids.discard(rid)
                if not rids:
                    del self._due_by_minute[minute]

    def _forget(self, rid: str, *, record: bool = True) -> None:
        self._unschedule(rid)
        gone = self.predictions.pop(rid, None) is not None
        gone = self.labels.pop(rid, None) is not None or gone
        if gone and record and self.recording:
            self._changes.append(["x", rid])

    # -- changelog -------------------------------------------------------------------------
    def take_changes(self) -> list[list[Any]]:
        """The operations since the last call (JSON-able), for the changelog."""
        changes, self._changes = self._changes, []
        return changes

    def apply_changes(self, ops: Iterable[list[Any]]) -> None:
        """Replay operations :meth:`take_changes` returned (on restore); records nothing."""
        recording, self.recording = self.recording, False
        try:
            for op in ops:
                kind, rid = op[0], op[1]
                if kind == "p":
                    w = Waiting(*op[2:])
                    self.predictions.setdefault(rid, []).append(w)
                    self._due_by_minute.setdefault(w.expires_s // 60, set()).add(rid)
                elif kind == "l":
                    self._set_label(rid, _early(op))
                elif kind == "x":
                    self._forget(rid, record=False)
                else:
                    raise EvidenceError(f"unknown label-join operation {kind!r}")
        finally:
            self.recording = recording

    def entries(self) -> Iterator[list[Any]]:
        """The whole state as operations (a snapshot)."""
        for rid, waiting in self.predictions.items():
            for w in waiting:
                yield ["p", rid, *w]
        for rid, early in self.labels.items():
            yield _label_op(rid, early)


def dump_ops(ops: list[list[Any]]) -> bytes:
    """Operations as compressed bytes (a changelog delta or a snapshot chunk).

    >>> load_ops(dump_ops([["x", "r1"]]))
    [['x', 'r1']]
    """
    return zlib.compress(json.dumps([JOIN_VERSION, ops], separators=(",", ":")).encode(), 1)


def load_ops(data: bytes) -> list[list[Any]]:
    """The operations :func:`dump_ops` wrote; :class:`ValueError` for anything else."""
    try:
        version, ops = json.loads(zlib.decompress(data))
    except (zlib.error, ValueError, TypeError) as exc:
        raise EvidenceError(f"not label-join operations: {exc}") from None
    if version != JOIN_VERSION or not isinstance(ops, list):
        raise EvidenceError(f"label-join operations of version {version!r}")
    return ops


def dump_chunks(join: LabelJoin, max_ops: int = 20_000) -> list[bytes]:
    """The whole state as snapshot chunks of at most ``max_ops`` operations each."""
    chunks: list[bytes] = []
    batch: list[list[Any]] = []
    for op in join.entries():
        batch.append(op)
        if len(batch) >= max_ops:
            chunks.append(dump_ops(batch))
            batch = []
    if batch or not chunks:
        chunks.append(dump_ops(batch))
    return chunks


def load_chunks(chunks: Iterable[bytes], early_label_s: int = EARLY_LABEL_S) -> LabelJoin:
    """A state rebuilt from :func:`dump_chunks`'s chunks."""
    join = LabelJoin(early_label_s)
    for chunk in chunks:
        join.apply_changes(load_ops(chunk))
    return join
