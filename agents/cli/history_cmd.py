"""``canary history MODEL``: every command applied or rejected, and every decision with its
evidence, read back from the events and control topics. With a key ring (``--key-file``,
``CANARY_CONTROL_KEY``, ``CANARY_CONTROL_KEY_FILE``), each decision record's signature is
checked and shown."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.cli.data_cmd import record_json
from model_canary.agents.client.tail import open_tail
from model_canary.agents.kafka.clients import consume
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import decode_any
from model_canary.streams.codec.json_records import decode_record
from model_canary.streams.errors import DecodeError
from model_canary.streams.messages import ControlEvent, Decision, MetricEvidence, Record, epoch_ms
from model_canary.streams.settings import Settings
from model_canary.streams.signing import Verifier
from model_canary.streams.signing_keys import KeyRing
from model_canary.streams.topics import TopicCatalogue


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    history = sub.add_parser(
        "history",
        parents=[common],
        help="a model's rollout history: commands applied or rejected, decisions with evidence",
    )
    history.add_argument("model")
    history.add_argument("--json", action="store_true", help="one JSON object per line")
    history.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help="check the decisions' signatures with the keys of FILE ('ID:SECRET' lines; "
        "default: CANARY_CONTROL_KEY and CANARY_CONTROL_KEY_FILE)",
    )
    history.set_defaults(handler=run)


def read_history(settings: Settings, model: str, idle: float = 1.5) -> list[Record]:
    """The model's events and decisions, oldest first."""
    catalogue = TopicCatalogue(settings.topic_prefix)
    consumer = open_tail(
        settings, [catalogue.events, catalogue.control], "canary-history", from_beginning=True
    )
    found: list[tuple[int, Record]] = []
    try:
        last = time.monotonic()
        while time.monotonic() - last < idle:
            msgs = consume(consumer, 500, 0.3)
            if msgs:
                last = time.monotonic()
            for msg in msgs:
                try:
                    if msg.topic() == catalogue.events:
                        content_type = h.header_dict(h.as_list(msg.headers())).get(h.CONTENT_TYPE)
                        record: Record = decode_record(ControlEvent, msg.value(), content_type)
                    else:
                        record = decode_any(msg.value() or b"")
                except DecodeError:
                    continue
                if isinstance(record, ControlEvent) and record.model == model:
                    found.append((epoch_ms(record.at), record))
                elif isinstance(record, Decision) and record.model == model:
                    found.append((epoch_ms(record.decided_at), record))
    finally:
        consumer.close()
    found.sort(key=lambda item: item[0])
    return [record for _, record in found]


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    ring = settings.control_keys + (KeyRing.read(args.key_file) if args.key_file else KeyRing())
    verifier = Verifier(ring) if ring else None
    records = read_history(settings, args.model)
    for record in records:
        check = signature_check(record, verifier)
        if args.json:
            extra = {} if check is None else {"signature_check": check}
            print(json.dumps({**record_json(record), **extra}))
        else:
            print(describe(record, check))
    if not records and not args.json:
        print(f"no history for model {args.model!r}")
    return 0


def signature_check(record: Record, verifier: Verifier | None) -> str | None:
    """For a decision record: ``"valid"`` or why not (``None`` without keys or for events,
    which the controller checked already).

    >>> ring = KeyRing.parse("evaluator:0123456789abcdef0123")
    >>> from model_canary.streams.messages import EPOCH
    >>> decision = Decision(decision_id="d1", model="iris", rollout_id="r", outcome="HOLD",
    ...                     decided_at=EPOCH)
    >>> signature_check(decision, Verifier(ring)), signature_check(decision, None)
    ('unsigned', None)
    """
    if verifier is None or not isinstance(record, Decision):
        return None
    rejection = verifier.authentic(record)
    return "valid" if rejection is None else rejection.reason


def describe(record: Record, check: str | None = None) -> str:
    if isinstance(record, ControlEvent):
        state = ""
        if record.outcome == "applied":
            state = f" -> {record.phase}, weight {(record.weight_bp or 0) / 100:g}%"
        why = f" ({record.reason})" if record.reason else ""
        return (
            f"{record.at.isoformat(timespec='seconds')}  {record.action:<10} by "
            f"{record.issued_by or '?':<9} {record.outcome}{why}{state}: {record.detail}"
        )
    assert isinstance(record, Decision)
    signed = ""
    if check == "valid":
        signed = f" [signed: key {record.key_id}]"
    elif check is not None:
        signed = f" [NOT AUTHENTIC: {check}]"
    lines = [
        f"{record.decided_at.isoformat(timespec='seconds')}  decision   {record.outcome.value} "
        f"at step {record.step_index} ({record.weight_bp / 100:g}%): {record.reason}{signed}"
    ]
    lines += [f"{'':22}{evidence_line(e)}" for e in record.evidence]
    return "\n".join(lines)


def evidence_line(e: MetricEvidence) -> str:
    """One metric's evidence in a decision (built-in or outcome metric), as a line."""
    return (
        f"{e.metric}: canary {e.canary_bad}/{e.canary_n} bad, baseline "
        f"{e.baseline_bad}/{e.baseline_n} bad, statistic {e.statistic:.3g} "
        f"(threshold {e.threshold:.3g}){' ALARM' if e.alarmed else ''}"
    )
