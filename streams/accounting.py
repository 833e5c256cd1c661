"""End-to-end accounting: every request answered exactly once, or dead-lettered.

A :class:`Ledger` is fed what a reader saw on the requests topic, the results topic and the
dead-letter topic; its :meth:`Ledger.report` counts each kind and lists the ids of every
discrepancy: a request with no served result (and no dead letter), a request with more served
results than it was sent, a result whose request was never sent.

>>> ledger = Ledger()
>>> for rid in ("r1", "r2", "r3", "r4"):
...     ledger.request(rid)
>>> ledger.result("r1", served=True); ledger.result("r1", served=False)
>>> ledger.result("r2", served=True); ledger.result("r2", served=True)
>>> ledger.dead_letter("r3", "undecodable")
>>> ledger.result("zz", served=True)
>>> report = ledger.report()
>>> report.missing, report.duplicated, report.orphans, report.ok
(('r4',), ('r2',), ('zz',), False)

A result written with at-least-once delivery (``repeatable``) may come more than once: its
repeats are counted, not taken for duplicates.

>>> ledger = Ledger()
>>> ledger.request("r1")
>>> ledger.result("r1", served=True, repeatable=True)
>>> ledger.result("r1", served=True, repeatable=True)
>>> report = ledger.report()
>>> report.repeats, report.duplicated, report.ok
(1, (), True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from model_canary.streams import headers as h
from model_canary.streams.codec.requests import decode_request
from model_canary.streams.errors import ConfigError, DecodeError

_JSON = h.JSON.encode()


class RequestRef(NamedTuple):
    """Who a request is, as the router names it: its id (``None`` if it has none the router
    can find) and its model (``""`` if neither a header nor the body names one)."""

    request_id: str | None
    model: str


def request_ref_of(
    value: bytes | None, headers: Sequence[tuple[str, str | bytes | None]] | None, max_bytes: int
) -> RequestRef:
    """The id the router routes a request under and the model it names.

    As in the router: the ``canary-request-id`` and ``canary-model`` headers when both are
    there and the body is not JSON; otherwise what the decoded body says (a bare JSON body
    takes the headers'). When the body cannot be decoded, the model is the header's.

    >>> request_ref_of(b"x", [("canary-model", b"iris"), ("canary-request-id", b"r1")], 100)
    RequestRef(request_id='r1', model='iris')
    >>> request_ref_of(b'{"request_id": "r2", "model": "iris", "inputs": {}}',
    ...                [("content-type", b"application/json")], 100)
    RequestRef(request_id='r2', model='iris')
    >>> request_ref_of(b"garbage", [("canary-model", b"iris")], 100)
    RequestRef(request_id=None, model='iris')
    """
    meta = h.header_dict(headers)
    content_type = meta.get(h.CONTENT_TYPE)
    request_id = meta.get(h.REQUEST_ID)
    model = meta.get(h.MODEL, "")
    is_json = (content_type or "").encode()[: len(_JSON)] == _JSON
    if model and request_id and not is_json:
        return RequestRef(request_id, model)
    if not value:
        return RequestRef(None, model)
    try:
        request = decode_request(
            value,
            content_type or None,
            max_bytes=max_bytes,
            model=model or None,
            request_id=request_id or None,
        )
    except DecodeError:
        return RequestRef(None, model)
    except Exception:  # an input the decoder did not foresee: still no id, never a crash
        return RequestRef(None, model)
    return RequestRef(request.request_id, request.model)


def request_id_of(
    value: bytes | None, headers: Sequence[tuple[str, str | bytes | None]] | None, max_bytes: int
) -> str | None:
    """The id the router routes a request under, or ``None`` if the router cannot find one
    (:func:`request_ref_of`'s id). A request with none is routed under its
    :func:`position_id`.

    >>> request_id_of(b"x", [("canary-model", b"iris"), ("canary-request-id", b"r1")], 100)
    'r1'
    >>> request_id_of(b'{"request_id": "r2", "model": "iris", "inputs": {}}',
    ...               [("content-type", b"application/json")], 100)
    'r2'
    >>> request_id_of(b"garbage", [], 100) is None
    True
    >>> request_id_of(b'{"request_id": "r3", "model": "iris", "inputs": "\\\\ud800"}',
    ...               [("content-type", b"application/json")], 100) is None
    True
    """
    return request_ref_of(value, headers, max_bytes).request_id


def position_id(topic: str, partition: int, offset: int) -> str:
    """The stand-in id of a message with no readable request id: where it was written.

    A dead letter names its source position in headers, so the two can still be matched.

    >>> position_id("canary.requests", 2, 17)
    'canary.requests[2]@17'
    """
    return f"{topic}[{partition}]@{offset}"


@dataclass(frozen=True, slots=True)
class AccountingReport:
    """Counts of what was seen and the ids of every discrepancy (sorted)."""

    requests: int
    served_results: int
    shadow_results: int
    dead_letters: int
    dead_letter_reasons: dict[str, int] = field(hash=False)
    missing: tuple[str, ...]
    duplicated: tuple[str, ...]
    orphans: tuple[str, ...]
    unreadable_results: int = 0
    #: Served results beyond the first of requests answered with at-least-once delivery.
    repeats: int = 0
    #: Served answers that are errors (a model failure, or a refusal: unknown model,
    #: undecodable, too large...), by error type; they count as answered.
    error_answers: dict[str, int] = field(default_factory=dict, hash=False)

    @property
    def ok(self) -> bool:
        """True when nothing is missing, duplicated or orphaned."""
        return not (self.missing or self.duplicated or self.orphans)

    def to_dict(self, max_ids: int = 20) -> dict[str, Any]:
        """A JSON-ready summary; id lists are cut to ``max_ids`` (the counts are complete)."""
        return {
            "requests": self.requests,
            "served_results": self.served_results,
            "shadow_results": self.shadow_results,
            "dead_letters": self.dead_letters,
            "dead_letter_reasons": dict(sorted(self.dead_letter_reasons.items())),
            "unreadable_results": self.unreadable_results,
            "repeats": self.repeats,
            "answered_with_error": sum(self.error_answers.values()),
            "error_answers": dict(sorted(self.error_answers.items())),
            "lost": len(self.missing),
            "duplicated": len(self.duplicated),
            "orphans": len(self.orphans),
            "lost_ids": list(self.missing[:max_ids]),
            "duplicated_ids": list(self.duplicated[:max_ids]),
            "orphan_ids": list(self.orphans[:max_ids]),
            "ok": self.ok,
        }


class Ledger:
    """Collects what was seen on the three topics; :meth:`report` does the accounting."""

    def __init__(self) -> None:
        self._requested: Counter[str] = Counter()
        self._earlier: set[str] = set()
        self._served: Counter[str] = Counter()
        self._repeatable: Counter[str] = Counter()  # served results marked at-least-once
        self._shadow: Counter[str] = Counter()
        self._dead: Counter[str] = Counter()
        self._reasons: Counter[str] = Counter()
        self._dead_letters = 0
        self._unreadable_results = 0
        self._errors: dict[str, Counter[str]] = {}

    def request(self, request_id: str) -> None:
        """A request sent in the audited window (a resent id counts once more)."""
        self._requested[request_id] += 1

    def earlier(self, request_id: str) -> None:
        """A request sent just before the window: its results are not counted, nor orphans."""
        self._earlier.add(request_id)

    def result(
        self,
        request_id: str,
        *,
        served: bool,
        repeatable: bool = False,
        error_type: str | None = None,
    ) -> None:
        """A result; ``repeatable``: written with at-least-once delivery (it may repeat); a
        served one with ``error_type`` is an answer with an error."""
        (self._served if served else self._shadow)[request_id] += 1
        if served and repeatable:
            self._repeatable[request_id] += 1
        if served and error_type is not None:
            self._errors.setdefault(request_id, Counter())[error_type] += 1

    def unreadable_result(self) -> None:
        """A message on the results topic that is not a result (counted, not matched)."""
        self._unreadable_results += 1

    def dead_letter(self, request_id: str | None, reason: str, *, shadow: bool = False) -> None:
        """A dead letter; only one of a served copy accounts for its request."""
        self._dead_letters += 1
        self._reasons[reason] += 1
        if request_id is not None and not shadow:
            self._dead[request_id] += 1

    def report(self) -> AccountingReport:
        requested = self._requested

        def counted(rid: str) -> bool:
            return rid in requested or rid not in self._earlier

        missing = [rid for rid, n in requested.items() if self._served[rid] + self._dead[rid] < n]
        # Results beyond what was requested; those marked repeatable are repeats, the others
        # duplicates (a request answered twice although exactly-once was promised).
        repeats = 0
        duplicated = []
        for rid, n in self._served.items():
            extra = n - max(requested[rid], 1)
            if extra <= 0:
                continue
            allowed = min(extra, self._repeatable[rid])
            if counted(rid):
                repeats += allowed
            if extra > allowed:
                duplicated.append(rid)
        answered = set(self._served) | set(self._shadow)
        orphans = [rid for rid in answered if rid not in requested and rid not in self._earlier]
        return AccountingReport(
            requests=sum(requested.values()),
            served_results=sum(n for rid, n in self._served.items() if counted(rid)),
            shadow_results=sum(n for rid, n in self._shadow.items() if counted(rid)),
            dead_letters=self._dead_letters,
            dead_letter_reasons=dict(self._reasons),
            missing=tuple(sorted(missing)),
            duplicated=tuple(sorted(d for d in duplicated if counted(d))),
            orphans=tuple(sorted(orphans)),
            unreadable_results=self._unreadable_results,
            repeats=repeats,
            error_answers=dict(
                sum((c for rid, c in self._errors.items() if counted(rid)), Counter())
            ),
        )


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: an ISO-8601 time (UTC if no offset) or a duration back from ``now``.

    >>> now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    >>> parse_since("10m", now).isoformat(), parse_since("2026-01-02T11:00", now).hour
    ('2026-01-02T11:50:00+00:00', 11)
    """
    raw = text.strip()
    unit = _UNITS.get(raw[-1:].lower())
    if unit is not None:
        try:
            amount = float(raw[:-1])
        except ValueError:
            amount = -1.0
        if amount >= 0:
            return now - timedelta(seconds=amount * unit)
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: give an ISO time (2026-01-02T11:00) or a duration (90s, 10m, 2h)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
