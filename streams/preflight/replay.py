"""The pure part of a pre-flight's replay: which recorded requests to replay, how each copy is
addressed, how fast, and where the replay stops.

A pre-flight reads the requests topic (``read_committed``) as the router did, and republishes
each recorded request of its model, payload and routing key untouched, to the pre-flight topic
of the candidate (and of the baseline, when the baseline is replayed too), with the headers the
router would have written plus ``canary-preflight``. The workers answer those copies on the
pre-flight results topic only.

>>> rec = recorded_request(b"x", [("canary-model", b"iris"), ("canary-request-id", b"r1")],
...                        b"user-7", "P.requests[0]@5", max_bytes=1000)
>>> rec.model, rec.request_id, rec.key
('iris', 'r1', b'user-7')
>>> dict(replay_headers(rec, "canary", "v2", "pf-1", 1000))["canary-preflight"]
b'pf-1'
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from model_canary.streams import headers as h
from model_canary.streams.codec.requests import decode_request
from model_canary.streams.cohort import bucket
from model_canary.streams.enums import Arm
from model_canary.streams.errors import ConfigError, DecodeError
from model_canary.streams.record_base import MAX_BP
from model_canary.streams.route_header import RouteHeader, encode_route
from model_canary.streams.stats.layout import SHADOW_PAIR_BP

_JSON = h.JSON.encode()
#: Headers a router writes (this one ``canary-route``, older ones the others) and the
#: pre-flight's own: a recorded request's values for them are dropped.
ROUTER_HEADERS = h.ROUTER_SET | {h.PREFLIGHT}
_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


@dataclass(frozen=True, slots=True)
class Recorded:
    """A recorded request as the router saw it: its model, the id it was routed (and
    answered) under, its routing key (the request id without one) and its headers without the
    router's own."""

    model: str
    request_id: str
    key: bytes
    headers: h.RawHeaders = field(default_factory=list)


def _text(raw: str | bytes | None) -> str:
    if raw is None:
        return ""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def recorded_request(
    value: bytes | None,
    headers: h.RawHeaders | None,
    key: bytes | None,
    where: str,
    *,
    max_bytes: int,
) -> Recorded | None:
    """Identify a recorded request as the router does; ``None`` for one the router refused
    (nothing to replay). ``where`` is its position id, the id of a request that had none.

    >>> recorded_request(b'{"text": "hi"}', [("content-type", b"application/json"),
    ...                  ("canary-model", b"spam")], None, "P.requests[2]@9", max_bytes=99)
    Recorded(model='spam', request_id='P.requests[2]@9', key=b'P.requests[2]@9', headers=[...])
    >>> recorded_request(b"junk", [], None, "P.requests[0]@1", max_bytes=99) is None
    True
    """
    if not value or len(value) > max_bytes:
        return None
    raw = list(headers or [])
    meta = {k: v for k, v in raw}
    model, request_id = _text(meta.get(h.MODEL)), _text(meta.get(h.REQUEST_ID))
    content_type = meta.get(h.CONTENT_TYPE)
    is_json = isinstance(content_type, bytes | str) and (
        (content_type.encode() if isinstance(content_type, str) else content_type)[: len(_JSON)]
        == _JSON
    )
    kept = [(k, v) for k, v in raw if k not in ROUTER_HEADERS]
    if not model or not request_id or is_json:
        try:
            request = decode_request(
                value,
                _text(content_type) or None,
                max_bytes=max_bytes,
                model=model or None,
                request_id=request_id or where,
                routing_key=_text(key) or None,
            )
        except DecodeError:
            return None
        if model and model != request.model:
            return None
        if not model:
            kept.append((h.MODEL, request.model.encode()))
        if not request_id:
            kept.append((h.REQUEST_ID, request.request_id.encode()))
        model, request_id = request.model, request.request_id
        if not key and request.routing_key:
            key = request.routing_key.encode()
    return Recorded(model, request_id, key or request_id.encode(), kept)


def replay_headers(
    rec: Recorded, arm: str, version: str, preflight_id: str, routed_at_ms: int
) -> h.RawHeaders:
    """The headers of a replayed copy: the recorded ones, then what the router writes for a
    shadow pair (each arm answers every replayed request; the pre-flight id as rollout id),
    and ``canary-preflight``.

    >>> rec = Recorded("iris", "r1", b"k1", [("canary-model", b"iris")])
    >>> replay_headers(rec, "canary", "v2", "pf-1", 7)[1:]
    [('canary-route', b'1;canary;v2;5000;7;;pf-1'), ('canary-preflight', b'pf-1')]
    """
    route = RouteHeader(Arm(arm), version, SHADOW_PAIR_BP, routed_at_ms, preflight_id)
    return [*rec.headers, (h.ROUTE, encode_route(route)), (h.PREFLIGHT, preflight_id.encode())]


def sampled(request_id: str, preflight_id: str, sample_bp: int) -> bool:
    """Whether a request is in the pre-flight's sample (``sample_bp`` of 10,000): a hash of
    its id, so a resumed pre-flight picks the same requests.

    >>> sampled("r1", "pf-1", MAX_BP), sampled("r1", "pf-1", 0)
    (True, False)
    """
    return sample_bp >= MAX_BP or bucket(request_id.encode(), preflight_id) < sample_bp


def new_preflight_id(model: str, candidate: str, now: datetime, nonce: str | None = None) -> str:
    """A pre-flight id naming what it tests and when it started, made unique by a random
    ``nonce`` (two pre-flights started in the same second get their own groups).

    >>> new_preflight_id("iris", "v2", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), "a1b2")
    'pf-iris-v2-20300102T030405-a1b2'
    """
    tail = nonce if nonce is not None else secrets.token_hex(2)
    return f"pf-{model}-{candidate}-{now.astimezone(UTC):%Y%m%dT%H%M%S}-{tail}"


def check_id(preflight_id: str) -> str:
    """A pre-flight id (it names consumer groups and transactional ids): letters, digits,
    ``_`` and ``-``.

    >>> check_id("pf-iris-v2-1")
    'pf-iris-v2-1'
    """
    if not _ID.match(preflight_id):
        raise ConfigError(
            f"pre-flight id {preflight_id!r} is invalid: use 1-100 letters, digits, '_' or '-'"
        )
    return preflight_id


def parse_offsets(text: str) -> dict[int, int]:
    """``--from-offsets``: ``PARTITION:OFFSET`` pairs separated by commas.

    >>> parse_offsets("0:100, 2:7")
    {0: 100, 2: 7}
    """
    out: dict[int, int] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        p, sep, o = part.strip().partition(":")
        if not sep or not p.isdigit() or not o.isdigit():
            raise ConfigError(
                f"--from-offsets: expected PARTITION:OFFSET pairs like 0:100,1:250, got {part!r}"
            )
        out[int(p)] = int(o)
    if not out:
        raise ConfigError("--from-offsets: give at least one PARTITION:OFFSET pair")
    return out


@dataclass(frozen=True, slots=True)
class Bounds:
    """Where a replay starts and stops on each partition of the requests topic: offsets
    ``start[p]`` up to, not including, ``end[p]`` (the end fixed when the pre-flight began, so
    a resumed one replays the same traffic).

    >>> b = Bounds({0: 10, 1: 0}, {0: 20, 1: 0})
    >>> b.within(0, 15), b.within(0, 20), b.done({0: 20}), b.total()
    (True, False, True, 10)
    """

    start: Mapping[int, int]
    end: Mapping[int, int]

    def within(self, partition: int, offset: int) -> bool:
        return self.start.get(partition, 0) <= offset < self.end.get(partition, 0)

    def done(self, positions: Mapping[int, int]) -> bool:
        """Every partition read up to its end (an empty range needs nothing read)."""
        return all(
            positions.get(p, self.start.get(p, 0)) >= end
            for p, end in self.end.items()
            if end > self.start.get(p, 0)
        )

    def total(self) -> int:
        """Recorded messages in range (every model's, before sampling)."""
        return sum(max(0, e - self.start.get(p, 0)) for p, e in self.end.items())


class Pacer:
    """At most ``rate`` replayed requests a second (0: no limit), with bursts of up to a tenth
    of a second's worth, so a replay never floods the workers that serve live traffic.

    >>> clock = iter([0.0, 0.0, 0.1, 0.5]).__next__  # the caller waits as told
    >>> pacer = Pacer(10.0, clock=clock, sleep=lambda s: None)
    >>> [round(pacer.delay(), 3) for _ in range(4)]
    [0.0, 0.1, 0.1, 0.0]
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not math.isfinite(rate) or rate < 0:
            raise ConfigError(f"--rate must be a number >= 0 (0: no limit), got {rate!r}")
        self.rate = rate
        self.burst = max(1.0, rate / 10)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._at: float | None = None

    def delay(self) -> float:
        """Take one token; returns how long the caller must wait for it (seconds)."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def wait(self) -> None:
        """Take one token, sleeping until it is there."""
        pause = self.delay()
        if pause > 0:
            self._sleep(pause)
