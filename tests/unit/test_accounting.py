"""The end-to-end accounting of requests, results and dead letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from model_canary.streams import headers as h
from model_canary.streams.accounting import Ledger, parse_since, position_id, request_id_of
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.codec.requests import encode_request_json
from model_canary.streams.errors import ConfigError
from model_canary.streams.messages import EPOCH, InferenceRequest

REQUEST = InferenceRequest(request_id="body-id", model="iris", inputs=b"{}", created_at=EPOCH)


def _ledger(*ids: str) -> Ledger:
    ledger = Ledger()
    for rid in ids:
        ledger.request(rid)
    return ledger


def test_balanced_traffic_has_no_discrepancy() -> None:
    ledger = _ledger("a", "b", "c")
    for rid in ("a", "b", "c"):
        ledger.result(rid, served=True)
    ledger.result("a", served=False)
    report = ledger.report()
    assert report.ok
    assert (report.requests, report.served_results, report.shadow_results) == (3, 3, 1)
    assert report.to_dict()["lost"] == 0


def test_a_request_without_a_served_result_is_lost_even_with_a_shadow_result() -> None:
    ledger = _ledger("a", "b")
    ledger.result("a", served=True)
    ledger.result("b", served=False)
    report = ledger.report()
    assert report.missing == ("b",) and not report.ok


def test_a_dead_lettered_request_is_accounted_for_but_not_a_dead_shadow_copy() -> None:
    ledger = _ledger("a", "b")
    ledger.dead_letter("a", "undecodable")
    ledger.dead_letter("b", "undecodable", shadow=True)
    ledger.dead_letter(None, "empty")
    report = ledger.report()
    assert report.missing == ("b",)
    assert report.dead_letters == 3
    assert report.dead_letter_reasons == {"undecodable": 2, "empty": 1}


def test_two_served_results_for_one_request_are_a_duplicate() -> None:
    ledger = _ledger("a", "b")
    for rid in ("a", "a", "b"):
        ledger.result(rid, served=True)
    report = ledger.report()
    assert report.duplicated == ("a",) and report.missing == ()
    assert report.to_dict()["duplicated_ids"] == ["a"]


def test_at_least_once_repeats_are_counted_not_duplicates() -> None:
    ledger = Ledger()
    for rid in ("r1", "r2", "r3"):
        ledger.request(rid)
    for _ in range(3):
        ledger.result("r1", served=True, repeatable=True)  # answered three times, marked
    ledger.result("r2", served=True, repeatable=True)
    ledger.result("r3", served=True)
    ledger.result("r3", served=True, repeatable=True)  # as many repeats as marked answers
    ledger.result("r2", served=False, repeatable=True)  # a shadow copy is no repeat
    report = ledger.report()
    assert (report.repeats, report.duplicated, report.ok) == (3, (), True)
    assert report.to_dict()["repeats"] == 3
    # Unmarked answers beyond the first are duplicates (exactly-once was promised for them).
    ledger.request("r4")
    ledger.result("r4", served=True)
    ledger.result("r4", served=True)
    report = ledger.report()
    assert (report.repeats, report.duplicated, report.ok) == (3, ("r4",), False)


def test_a_request_sent_twice_may_be_served_twice() -> None:
    ledger = _ledger("a", "a")
    ledger.result("a", served=True)
    assert ledger.report().missing == ("a",)
    ledger.result("a", served=True)
    assert ledger.report().ok


def test_results_with_no_request_are_orphans_unless_the_request_came_just_before() -> None:
    ledger = _ledger("a")
    ledger.result("a", served=True)
    ledger.earlier("old")
    ledger.result("old", served=True)
    ledger.result("old", served=False)
    ledger.result("ghost", served=False)
    report = ledger.report()
    assert report.orphans == ("ghost",)
    assert (report.served_results, report.shadow_results) == (1, 1)


def test_id_lists_are_capped_but_counts_are_not() -> None:
    ledger = _ledger(*(f"r{i:02}" for i in range(30)))
    summary = ledger.report().to_dict(max_ids=5)
    assert summary["lost"] == 30 and summary["lost_ids"] == ["r00", "r01", "r02", "r03", "r04"]


def test_unreadable_results_are_counted_not_matched() -> None:
    ledger = _ledger()
    ledger.unreadable_result()
    report = ledger.report()
    assert report.unreadable_results == 1 and report.ok


def test_request_id_comes_from_headers_when_the_router_would_not_decode() -> None:
    avro = codec_for(InferenceRequest).encode(REQUEST)
    headers = [(h.MODEL, b"iris"), (h.REQUEST_ID, b"header-id")]
    assert request_id_of(avro, headers, 1000) == "header-id"
    # Without the model header the router decodes the body, and so does the audit.
    assert request_id_of(avro, [(h.REQUEST_ID, b"header-id")], 1000) == "body-id"
    assert request_id_of(avro, None, 1000) == "body-id"


def test_request_id_of_a_json_request_is_the_one_in_its_body() -> None:
    body = encode_request_json(REQUEST)
    headers = [(h.CONTENT_TYPE, b"application/json"), (h.MODEL, b"iris"), (h.REQUEST_ID, b"x")]
    assert request_id_of(body, headers, 10_000) == "body-id"


def test_an_unreadable_request_has_no_id_but_a_position() -> None:
    assert request_id_of(b"\xc3\x01garbage", [], 1000) is None
    assert request_id_of(None, [(h.MODEL, b"iris")], 1000) is None
    big = codec_for(InferenceRequest).encode(REQUEST)
    assert request_id_of(big, [], 5) is None
    assert position_id("t", 0, 5) == "t[0]@5"


NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("10m", NOW - timedelta(minutes=10)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("1d", NOW - timedelta(days=1)),
        ("2026-01-02T11:00:00", datetime(2026, 1, 2, 11, tzinfo=UTC)),
        ("2026-01-02T11:00:00+01:00", datetime(2026, 1, 2, 10, tzinfo=UTC)),
    ],
)
def test_since_is_a_time_or_a_duration(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "-5m", "m", ""])
def test_a_bad_since_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_since(text, NOW)


def test_a_refused_request_is_answered_with_an_error_and_counted_as_one() -> None:
    ledger = Ledger()
    for rid in ("r1", "r2", "r3"):
        ledger.request(rid)
    ledger.result("r1", served=True)
    ledger.result("r2", served=True, error_type="unknown-model")
    ledger.dead_letter("r2", "unknown-model")
    ledger.result("r3", served=True, error_type="exception")
    report = ledger.report()
    assert report.ok and report.served_results == 3
    assert report.error_answers == {"unknown-model": 1, "exception": 1}
    assert report.to_dict()["answered_with_error"] == 2
