"""A worker reads each micro-batch's routings once per distinct set of routing headers
(``_Routes``): what it reads for each request is what reading that request's headers alone
gives (as the worker did before, from ``header_dict``), raising the same errors; in either
form (``canary-route``, or an older router's separate headers)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.agents.worker.agent import REDRIVEN, _Routed, _Routes
from model_canary.streams import headers as h
from model_canary.streams.errors import DecodeError
from tests.unit.record_strategies import HEADER_VALUES

_NAMES = [
    h.CONTENT_TYPE,
    h.MODEL,
    h.REQUEST_ID,
    h.ROUTE,
    h.ARM,
    h.VERSION,
    h.ROLLOUT_ID,
    h.WEIGHT_BP,
    h.ROUTED_AT_MS,
    h.SHADOW,
    REDRIVEN,
    h.DELIVERY,
    h.PREFLIGHT,
]
# Values the router writes (as bytes, or as text from a client library), and odd ones: the
# routing headers of a batch repeat, so the strategy draws from few values.
_VALUES: st.SearchStrategy[str | bytes | None] = (
    st.sampled_from(
        [
            None,
            b"",
            "",
            b"baseline",
            "canary",
            b"canary",
            b"stable",
            b"bogus",
            b"ro1",
            b"ro2",
            b"\xff\xfe",
            b"0",
            b"500",
            "500",
            b"10000",
            b"10001",
            b"-1",
            b"junk",
            b"1",
            "1",
            b"0",
            h.AT_LEAST_ONCE,
            h.AT_LEAST_ONCE.decode(),
            b"1700000000123",
            b"1700000000124",
            b"99999999999999999999",
            b"pf1",
            b"1;canary;v2;500;1700000000123;;ro1",
            "1;canary;v2;500;1700000000123;;ro1",
            b"1;baseline;v1;500;1700000000124;a;ro1",
            b"1;canary;v2;5000;0;s;ro2",
            b"2;canary;v2;500;0;;ro1",
            b"1;canary;v2;500;0;x;ro1",
        ]
    )
    | HEADER_VALUES
)
_HEADERS = st.lists(st.tuples(st.sampled_from(_NAMES), _VALUES), max_size=14)


def _alone(headers: list[tuple[str, str | bytes | None]], preflight: bool) -> _Routed | str:
    """How the worker read one request's routing before batches shared them."""
    try:
        return _Routed.from_headers(h.header_dict(headers), preflight=preflight)
    except DecodeError as exc:
        return f"{type(exc).__name__}: {exc}"


@settings(max_examples=300)
@given(
    batch=st.lists(st.tuples(_HEADERS, st.booleans()), min_size=1, max_size=40),
    repeat=st.integers(1, 3),
)
def test_a_batch_reads_each_routing_as_its_request_alone_would(
    batch: list[tuple[list[tuple[str, str | bytes | None]], bool]], repeat: int
) -> None:
    routes = _Routes()
    for headers, preflight in batch * repeat:  # repeated: read from what was seen before
        try:
            got: _Routed | str = routes.of(dict(headers), preflight=preflight)
        except DecodeError as exc:
            got = f"{type(exc).__name__}: {exc}"
        assert got == _alone(headers, preflight)


def test_requests_routed_alike_share_one_routing() -> None:
    routes = _Routes()
    first = [(h.ARM, b"canary"), (h.ROLLOUT_ID, b"ro1"), (h.REQUEST_ID, b"r1")]
    second = [(h.ARM, b"canary"), (h.ROLLOUT_ID, b"ro1"), (h.REQUEST_ID, b"r2")]
    other = [(h.ARM, b"canary"), (h.ROLLOUT_ID, b"ro2"), (h.REQUEST_ID, b"r3")]
    a, b, c = (routes.of(dict(x)) for x in (first, second, other))
    assert a is b and a is not c and c.rollout_id == "ro2"
    # A replayed copy is never read as the live request routed alike.
    assert routes.of(dict(first), preflight=True).preflight == "unknown"
    assert routes.of(dict([*first, (h.PREFLIGHT, b"pf1")]), preflight=True).preflight == "pf1"
