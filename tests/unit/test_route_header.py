"""The packed ``canary-route`` header: written and read back unchanged, any other value refused
with a reason (never another exception), and read as an older router's separate headers say
the same routing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.streams import headers as h
from model_canary.streams.enums import Arm
from model_canary.streams.errors import InvalidRecordError
from model_canary.streams.route_header import (
    RouteHeader,
    UnknownRouteVersionError,
    decode_route,
    encode_parts,
    encode_route,
    is_shadow_copy,
    read_route,
    redriven_headers,
)

routes = st.builds(
    RouteHeader,
    arm=st.sampled_from(list(Arm)),
    version=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    weight_bp=st.integers(0, 10_000),
    routed_at_ms=st.none() | st.integers(1, 253_402_300_799_999),
    rollout_id=st.none() | st.text(min_size=1, max_size=80),
    served=st.booleans(),
    at_least_once=st.booleans(),
    redriven=st.booleans(),
)


def old_router_headers(route: RouteHeader) -> h.RawHeaders:
    """What the router wrote before ``canary-route`` (effc09a's ``Router._compile`` and its
    routed-at stamp), in its order; a worker's re-drive mark after them."""
    headers: h.RawHeaders = [
        (h.ARM, route.arm.value.encode()),
        (h.VERSION, route.version.encode()),
        (h.ROLLOUT_ID, (route.rollout_id or "").encode()),
        (h.WEIGHT_BP, str(route.weight_bp).encode()),
    ]
    if not route.served:
        headers.append((h.SHADOW, b"1"))
    if route.at_least_once:
        headers.append((h.DELIVERY, h.AT_LEAST_ONCE))
    headers.append((h.ROUTED_AT_MS, str(route.routed_at_ms or 0).encode()))
    if route.redriven:
        headers.append((h.REDRIVEN, b"1"))
    return headers


@settings(max_examples=300)
@given(route=routes, text=st.booleans())
def test_a_route_reads_back_as_written_from_bytes_or_text(route: RouteHeader, text: bool) -> None:
    value = encode_route(route)
    assert decode_route(value.decode() if text else value) == route
    assert read_route({h.ROUTE: value}) == route
    head, tail = encode_parts(route)
    assert head + str(route.routed_at_ms or 0).encode() + tail == value


@settings(max_examples=300)
@given(route=routes)
def test_an_older_routers_headers_read_as_the_same_routing(route: RouteHeader) -> None:
    """Workers read requests routed before the upgrade as the router meant them."""
    assert read_route(dict(old_router_headers(route))) == route


@settings(max_examples=500)
@given(
    value=st.binary(max_size=60)
    | st.text(max_size=60)
    | st.lists(st.sampled_from(["1", "canary", "v2", "500", "0", "", "s", "sar", "x", "-1"])).map(
        ";".join
    )
)
def test_any_other_value_is_refused_with_a_reason_never_another_error(value: str | bytes) -> None:
    try:
        route = decode_route(value)
    except InvalidRecordError as exc:
        assert exc.reason in ("invalid-record", "unknown-route-version") and str(exc)
    else:
        assert encode_route(route) == (value.encode() if isinstance(value, str) else value)


@pytest.mark.parametrize("version", ["2", "0", "17"])
def test_a_route_of_an_unknown_version_is_refused_saying_which_versions_are_read(
    version: str,
) -> None:
    with pytest.raises(UnknownRouteVersionError) as caught:
        decode_route(f"{version};canary;v2;500;1700000000000;;ro1".encode())
    assert caught.value.reason == "unknown-route-version"
    assert str(caught.value) == (
        f"header canary-route is version {version}; this reader knows version 1 only "
        "(upgrade it before the router)"
    )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"", "does not start with a version number"),
        (b"v1;canary", "does not start with a version number"),
        (b"1;canary;v2;500;0;", "has 6 fields; version 1 has 7"),
        (b"1;odd;v2;500;0;;ro1", "arm 'odd' is not an arm"),
        (b"1;canary;;500;0;;ro1", "names no version"),
        (b"1;canary;v2;10001;0;;ro1", "weight 10001 is outside 0..10000"),
        (b"1;canary;v2;-1;0;;ro1", "weight '-1' is not a number"),
        (b"1;canary;v2;+5;0;;ro1", "weight '+5' is not a number"),
        (b"1;canary;v2;\xd9\xa5;0;;ro1", "is not a number"),  # an Arabic-Indic five
        (b"1;canary;v2;5;99999999999999999;;ro1", "routed-at 99999999999999999 is not a time"),
        (b"1;canary;v2;5;0;as;ro1", "flags 'as' are not some of 's', 'a', 'r' in that order"),
        (b"1;canary;v2;5;0;x;ro1", "flags 'x'"),
    ],
)
def test_a_malformed_route_is_refused_saying_what_is_wrong(value: bytes, says: str) -> None:
    with pytest.raises(InvalidRecordError) as caught:
        decode_route(value)
    assert caught.value.reason == "invalid-record" and says in str(caught.value)


def test_a_rollout_id_may_hold_the_separator() -> None:
    route = RouteHeader(Arm.CONTROL, "v1", 2500, 5, "a;b;c")
    assert decode_route(encode_route(route)) == route


def test_an_older_routers_request_is_read_from_its_headers_whatever_canary_route_says() -> None:
    """An older router left a client's ``canary-route`` on the requests it routed: with its own
    ``canary-arm`` beside it, the forged value is never read."""
    old = old_router_headers(RouteHeader(Arm.BASELINE, "v1", 500, 7, "ro1"))
    forged = [(h.ROUTE, b"1;canary;v2;10000;7;;ro1"), *old]
    assert read_route(dict(forged)) == read_route(dict(old))
    assert read_route(dict(forged)).arm is Arm.BASELINE
    assert read_route(dict([(h.ROUTE, b"junk"), *old])).arm is Arm.BASELINE


def test_a_request_without_routing_headers_is_on_the_stable_arm() -> None:
    assert read_route({h.MODEL: b"iris"}) == RouteHeader(Arm.STABLE, "", 0, None, None)


@settings(max_examples=100)
@given(route=routes.filter(lambda r: r.served), packed=st.booleans())
def test_a_redriven_request_keeps_its_form_and_reads_as_the_baselines(
    route: RouteHeader, packed: bool
) -> None:
    own: h.RawHeaders = [(h.MODEL, b"iris"), (h.REQUEST_ID, b"r1")]
    added: h.RawHeaders = [(h.ROUTE, encode_route(route))] if packed else old_router_headers(route)
    routed = own + added
    after = redriven_headers(routed, "v0")
    names = [k for k, _ in after]
    assert (h.ROUTE in names, h.ARM in names) == (packed, not packed)
    assert after[:2] == own and len(names) == len(set(names))
    again = read_route(dict(after))
    assert again.arm is Arm.BASELINE and again.redriven and again.version == "v0"
    kept = ("weight_bp", "routed_at_ms", "rollout_id", "served", "at_least_once")
    assert all(getattr(again, f) == getattr(route, f) for f in kept)


@settings(max_examples=200)
@given(route=routes, packed=st.booleans())
def test_a_shadow_copy_is_known_in_either_form(route: RouteHeader, packed: bool) -> None:
    headers = [(h.ROUTE, encode_route(route))] if packed else old_router_headers(route)
    assert is_shadow_copy(h.header_dict(headers)) is (not route.served)


def test_an_unreadable_route_counts_as_served() -> None:
    assert not is_shadow_copy({h.ROUTE: "2;canary;v2;0;0;s;ro1"})
    assert not is_shadow_copy({h.ROUTE: "junk", h.SHADOW: "1"})
    assert is_shadow_copy({h.ARM: "canary", h.WEIGHT_BP: "-5", h.SHADOW: "1"})
