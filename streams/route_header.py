"""The router's routing of one request, as its routed copy carries it: one packed, versioned
header, ``canary-route``, instead of one header per field.

Pure code, no Kafka. The router writes it on every routed copy; a worker reads it
(:func:`read_route`) and still reads the separate headers an older router wrote
(``canary-arm``, ``canary-version``, ``canary-rollout-id``, ``canary-weight-bp``,
``canary-routed-at-ms``, ``canary-shadow``, ``canary-delivery``), so workers can be upgraded
before the router. Fewer headers is what the router's throughput needs: the client library
copies every header of every message it writes.

Version 1 is text (readable with kcat), seven fields separated by ``;``::

    1;ARM;VERSION;WEIGHT_BP;ROUTED_AT_MS;FLAGS;ROLLOUT_ID

- ``ARM``: ``stable``, ``baseline``, ``canary`` or ``control``;
- ``VERSION``: the model version the copy was routed to (a topic-name part: no ``;``);
- ``WEIGHT_BP``: the canary's probability for this request, 0..10000;
- ``ROUTED_AT_MS``: when the router routed it, epoch milliseconds (``0``: not known);
- ``FLAGS``: any of ``s`` (a shadow copy: its answer is not served), ``a`` (routed with
  at-least-once delivery: its answer may repeat), ``r`` (re-driven to the baseline after a
  rollback), in that order, or nothing;
- ``ROLLOUT_ID``: the rest of the value (it may itself contain ``;``), empty without one.

A reader refuses a value of another version (it says which it reads), and any malformed field.

>>> r = RouteHeader(Arm.CANARY, "v2", 500, 1764547200000, "ro1")
>>> encode_route(r)
b'1;canary;v2;500;1764547200000;;ro1'
>>> decode_route(encode_route(r)) == r
True
>>> decode_route(b"2;canary;v2;500;1;;ro1")
Traceback (most recent call last):
...
model_canary.streams.route_header.UnknownRouteVersionError: header canary-route is version 2; \
this reader knows version 1 only (upgrade it before the router)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from model_canary.streams import headers as h
from model_canary.streams.enums import Arm
from model_canary.streams.errors import InvalidRecordError
from model_canary.streams.record_base import MAX_BP, from_epoch_ms

#: The version this module writes (and the only one it reads).
ROUTE_VERSION = 1
_FIELDS = 7
#: Epoch milliseconds of 10000-01-01: routed-at stamps are below it.
_YEAR_10000_MS = 253_402_300_800_000
_ARMS = {a.value: a for a in Arm}
#: Every valid FLAGS field: the subsets of "sar", in that order.
_FLAGS = frozenset(s + a + r for s in ("", "s") for a in ("", "a") for r in ("", "r"))


class UnknownRouteVersionError(InvalidRecordError):
    """A ``canary-route`` header of a version this reader does not know: written by a newer
    router than the worker reading it."""

    reason = "unknown-route-version"


@dataclass(frozen=True, slots=True)
class RouteHeader:
    """Where and how the router routed one request (see the module's format)."""

    arm: Arm
    version: str
    weight_bp: int
    routed_at_ms: int | None
    rollout_id: str | None
    served: bool = True
    at_least_once: bool = False
    redriven: bool = False


def encode_parts(route: RouteHeader) -> tuple[bytes, bytes]:
    """The value of ``route``'s header around its routed-at stamp: ``head + ms + tail`` is
    :func:`encode_route` of it routed at ``ms`` (the router stamps each batch so).

    >>> head, tail = encode_parts(RouteHeader(Arm.CANARY, "v2", 500, None, "ro1", served=False))
    >>> head + b"42" + tail
    b'1;canary;v2;500;42;s;ro1'
    """
    if ";" in route.version or not route.version:
        raise InvalidRecordError(f"version {route.version!r} cannot be written in {h.ROUTE}")
    if not 0 <= route.weight_bp <= MAX_BP:
        raise InvalidRecordError(f"weight {route.weight_bp} is outside 0..{MAX_BP}")
    flags = (
        ("" if route.served else "s")
        + ("a" if route.at_least_once else "")
        + ("r" if route.redriven else "")
    )
    head = f"{ROUTE_VERSION};{route.arm.value};{route.version};{route.weight_bp};"
    return head.encode(), f";{flags};{route.rollout_id or ''}".encode()


def encode_route(route: RouteHeader) -> bytes:
    """The ``canary-route`` value of ``route``."""
    head, tail = encode_parts(route)
    return head + str(route.routed_at_ms or 0).encode() + tail


def decode_route(raw: str | bytes) -> RouteHeader:
    """A ``canary-route`` value read back; :class:`UnknownRouteVersionError` for a value of
    another version, :class:`~.errors.InvalidRecordError` for a malformed one.

    >>> decode_route(b"1;baseline;v1;0;0;ar;")
    RouteHeader(arm=<Arm.BASELINE: 'baseline'>, version='v1', weight_bp=0, routed_at_ms=None, \
rollout_id=None, served=True, at_least_once=True, redriven=True)
    >>> decode_route(b"1;canary;v2;20000;0;;ro1")
    Traceback (most recent call last):
    ...
    model_canary.streams.errors.InvalidRecordError: header canary-route weight 20000 is \
outside 0..10000
    """
    text = h.header_text(raw)
    version, _, _ = text.partition(";")
    if version != "1":
        if not version.isdigit():
            raise InvalidRecordError(
                f"header {h.ROUTE} {text[:80]!r} does not start with a version number"
            )
        raise UnknownRouteVersionError(
            f"header {h.ROUTE} is version {version[:20]}; this reader knows version "
            f"{ROUTE_VERSION} only (upgrade it before the router)"
        )
    fields = text.split(";", _FIELDS - 1)
    if len(fields) != _FIELDS:
        raise InvalidRecordError(
            f"header {h.ROUTE} {text[:80]!r} has {len(fields)} fields; version 1 has {_FIELDS}"
        )
    _, arm_text, version_name, weight_text, at_text, flags, rollout_id = fields
    arm = _ARMS.get(arm_text)
    if arm is None:
        raise InvalidRecordError(f"header {h.ROUTE} arm {arm_text[:40]!r} is not an arm")
    if not version_name:
        raise InvalidRecordError(f"header {h.ROUTE} names no version")
    weight_bp = _number(weight_text, "weight")
    if weight_bp > MAX_BP:
        raise InvalidRecordError(f"header {h.ROUTE} weight {weight_bp} is outside 0..{MAX_BP}")
    routed_at_ms = _number(at_text, "routed-at")
    if routed_at_ms >= _YEAR_10000_MS:
        raise InvalidRecordError(f"header {h.ROUTE} routed-at {routed_at_ms} is not a time")
    if flags not in _FLAGS:
        raise InvalidRecordError(
            f"header {h.ROUTE} flags {flags[:20]!r} are not some of 's', 'a', 'r' in that order"
        )
    return RouteHeader(
        arm,
        version_name,
        weight_bp,
        routed_at_ms or None,
        rollout_id or None,
        served="s" not in flags,
        at_least_once="a" in flags,
        redriven="r" in flags,
    )


def _number(text: str, what: str) -> int:
    # ASCII digits only: int() would also take " 5", "+5", "5_0" and other scripts' digits.
    if not text or len(text) > 18 or not text.isascii() or not text.isdigit():
        raise InvalidRecordError(f"header {h.ROUTE} {what} {text[:40]!r} is not a number")
    return int(text)


def read_route(meta: Mapping[str, str | bytes | None]) -> RouteHeader:
    """How the request with headers ``meta`` (by name, values as Kafka gives them or as
    text) was routed: from ``canary-route``, or from an older router's separate headers.

    An older router wrote ``canary-arm`` on every routed copy and removed a client's
    ``canary-route`` from no request, so when ``canary-arm`` is there (with a value) the
    separate headers are read (as before: an unreadable value counts as absent) and
    ``canary-route`` is ignored; a current router removes a client's ``canary-arm``. A header
    without a value counts as absent. Without either: the ``stable`` arm. With the separate
    headers, ``canary-redriven: 1`` marks a re-driven request.

    >>> read_route({h.ROUTE: b"1;canary;v2;500;0;;ro1"}).weight_bp
    500
    >>> read_route({h.ARM: b"canary", h.WEIGHT_BP: b"500", h.ROUTE: b"junk"}).arm.value
    'canary'
    >>> read_route({}).arm.value
    'stable'
    """
    get = meta.get
    packed = get(h.ROUTE)
    if packed and not get(h.ARM):  # a header without a value counts as absent
        return decode_route(packed)
    try:
        arm = Arm(h.header_text(get(h.ARM, Arm.STABLE.value)))
    except ValueError:
        arm = Arm.STABLE
    weight_bp = _legacy_int(get(h.WEIGHT_BP))
    routed_at_ms = _legacy_int(get(h.ROUTED_AT_MS)) or None
    if not 0 <= weight_bp <= MAX_BP:
        raise InvalidRecordError(f"header {h.WEIGHT_BP} {weight_bp} is outside 0..{MAX_BP}")
    if routed_at_ms is not None and not 0 < routed_at_ms < _YEAR_10000_MS:
        try:
            from_epoch_ms(routed_at_ms)
        except OverflowError:
            raise InvalidRecordError(
                f"header {h.ROUTED_AT_MS} {routed_at_ms} is not a time"
            ) from None
    version = get(h.VERSION)
    rollout_id = get(h.ROLLOUT_ID)
    return RouteHeader(
        arm,
        "" if version is None else h.header_text(version),
        weight_bp,
        routed_at_ms,
        (None if rollout_id is None else h.header_text(rollout_id)) or None,
        served=_legacy_text(get(h.SHADOW)) != "1",
        at_least_once=_legacy_text(get(h.DELIVERY)) == h.AT_LEAST_ONCE.decode(),
        redriven=_legacy_text(get(h.REDRIVEN)) == "1",
    )


def _legacy_text(raw: str | bytes | None) -> str | None:
    return None if raw is None else h.header_text(raw)


def _legacy_int(raw: str | bytes | None) -> int:
    try:
        return int(h.header_text(raw)) if raw is not None else 0
    except ValueError:
        return 0


def redriven_headers(raw: h.RawHeaders, baseline_version: str) -> h.RawHeaders:
    """The headers of a request re-driven to the baseline (``baseline_version``) after a
    rollback, in the form it was routed in: its ``canary-route`` with the baseline arm and
    version and the ``r`` flag, or the separate headers with ``canary-redriven: 1``.

    >>> redriven_headers([("canary-model", b"iris"), (h.ROUTE, b"1;canary;v2;500;7;;ro1")], "v1")
    [('canary-model', b'iris'), ('canary-route', b'1;baseline;v1;500;7;r;ro1')]
    >>> redriven_headers([(h.ARM, b"canary"), (h.VERSION, b"v2")], "v1")
    [('canary-arm', b'baseline'), ('canary-version', b'v1'), ('canary-redriven', b'1')]
    """
    meta = dict(raw)
    packed = meta.get(h.ROUTE)
    if packed and not meta.get(h.ARM):
        route = replace(
            decode_route(packed), arm=Arm.BASELINE, version=baseline_version, redriven=True
        )
        return [*((k, v) for k, v in raw if k != h.ROUTE), (h.ROUTE, encode_route(route))]
    replaced = {h.ARM, h.VERSION, h.REDRIVEN}
    return [
        *((k, v) for k, v in raw if k not in replaced),
        (h.ARM, Arm.BASELINE.value.encode()),
        (h.VERSION, baseline_version.encode()),
        (h.REDRIVEN, b"1"),
    ]


def is_shadow_copy(meta: Mapping[str, str | bytes | None]) -> bool:
    """Whether the request with headers ``meta`` is a shadow copy (its answer is not
    served), in either form; never raises (an unreadable ``canary-route`` counts as served:
    what the audit needs of a dead letter, whose headers may be why it is one).

    >>> is_shadow_copy({h.ROUTE: "1;canary;v2;5000;0;s;ro1"}), is_shadow_copy({h.SHADOW: "1"})
    (True, True)
    >>> is_shadow_copy({h.ROUTE: "9;?"}), is_shadow_copy({})
    (False, False)
    """
    try:
        return not read_route(meta).served
    except InvalidRecordError:
        legacy = not meta.get(h.ROUTE) or bool(meta.get(h.ARM))
        return legacy and _legacy_text(meta.get(h.SHADOW)) == "1"
