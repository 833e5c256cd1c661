"""``canary request`` (send one request, print its result) and ``canary tail``."""

from __future__ import annotations

import argparse
import base64
import json
import math
import sys
from typing import Any

from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.client.feedback import FeedbackClient
from model_canary.agents.client.inference import CanaryClient, InferenceError
from model_canary.agents.client.tail import open_tail
from model_canary.agents.kafka.clients import consume
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import decode_any
from model_canary.streams.codec.json_records import is_json, to_json_doc
from model_canary.streams.codec.requests import canonical_json
from model_canary.streams.errors import ConfigError, DecodeError
from model_canary.streams.topics import TopicCatalogue

TAILS = (
    "results",
    "shadow-results",
    "evidence",
    "predictions",
    "metrics",
    "events",
    "control",
    "feedback",
    "rollout-state",
    "dead-letters",
    "preflight-results",
    "preflights",
)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    req = sub.add_parser(
        "request",
        parents=[common],
        help="send one inference request and print the served result as JSON",
    )
    req.add_argument("--model", required=True)
    req.add_argument(
        "--input",
        required=True,
        metavar="JSON",
        help='an OIP request body, or {"tensor name": nested list} (made into one); "-" reads '
        "stdin",
    )
    req.add_argument(
        "--as-is",
        action="store_true",
        help="send --input unchanged as the model's input (any JSON value, e.g. what a "
        "python: model function takes), not made into an OIP request",
    )
    req.add_argument("--key", help="routing key (user or session id) for sticky cohorts")
    req.add_argument("--arm", choices=("baseline", "canary"), help="force an arm (testers)")
    req.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    req.set_defaults(handler=run_request)

    fb = sub.add_parser(
        "feedback",
        parents=[common],
        help="send feedback on a request: its true label, a score, attributes",
        description="Send what was learned about request ID's answer to the feedback topic: "
        "its true label (accuracy compares it with each version's prediction), a numeric "
        "value (a rating, a judge's score, a regression target) and attributes (KEY=VALUE); "
        "outcome metrics in a plan judge them (docs/outcomes.md). Give at least one.",
    )
    fb.add_argument("--model", required=True, help="the model the request was for")
    fb.add_argument("--request-id", required=True, metavar="ID", help="the request's id")
    fb.add_argument("--label", default="", help="the true label, as the model predicts it")
    fb.add_argument("--value", type=_finite, metavar="X", help="a numeric outcome (finite number)")
    fb.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an outcome attribute (repeatable), e.g. --attr complaint=yes",
    )
    fb.add_argument("--source", help="who knows the label (kept with it)")
    fb.set_defaults(handler=run_feedback)

    tail = sub.add_parser(
        "tail",
        parents=[common],
        help="print a topic's records as JSON lines",
        description="Print a topic's records as JSON lines (their JSON form, see docs/json.md). "
        "Dead letters show why (reason, detail), where from (source topic, partition, offset, "
        "agent), the key and the message.",
    )
    tail.add_argument("topic", choices=TAILS)
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    tail.add_argument("--max", type=int, help="stop after this many records")
    tail.add_argument("--idle-exit", type=float, help="stop after this many idle seconds")
    tail.set_defaults(handler=run_tail)


def run_request(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.input == "-" else args.input
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--input is not JSON: {exc}") from None
    inputs: bytes | dict[str, Any]
    if args.as_is:
        inputs = canonical_json(value)
    elif isinstance(value, dict):
        inputs = value
    else:
        raise ConfigError("--input must be a JSON object (or give --as-is)")
    headers = {"canary-arm": args.arm} if args.arm else None
    with CanaryClient(settings_from_args(args)) as client:
        try:
            result = client.infer(
                inputs, model=args.model, key=args.key, timeout=args.timeout, headers=headers
            )
        except InferenceError as exc:
            print(json.dumps(record_json(exc.result)))
            return 1
    print(json.dumps(record_json(result)))
    return 0


def run_feedback(args: argparse.Namespace) -> int:
    attributes = dict(_attribute(a) for a in args.attr)
    if not args.label and args.value is None and not attributes:
        raise ConfigError("give at least one of --label, --value and --attr")
    labels = FeedbackClient(settings_from_args(args), source=args.source)
    try:
        labels.send(
            args.request_id,
            model=args.model,
            label=args.label,
            value=args.value,
            attributes=attributes,
            flush=True,
        )
    finally:
        labels.close()
    parts = [f"label {args.label!r}"] if args.label else []
    parts += [f"value {args.value:g}"] if args.value is not None else []
    parts += [f"{k}={v}" for k, v in attributes.items()]
    print(f"feedback ({', '.join(parts)}) sent for request {args.request_id} of {args.model}")
    return 0


def run_tail(args: argparse.Namespace) -> int:
    import time

    settings = settings_from_args(args)
    catalogue = TopicCatalogue(settings.topic_prefix)
    topic = {
        "results": catalogue.results,
        "shadow-results": catalogue.shadow_results,
        "evidence": catalogue.evidence,
        "predictions": catalogue.predictions,
        "metrics": catalogue.metrics,
        "events": catalogue.events,
        "control": catalogue.control,
        "feedback": catalogue.feedback,
        "rollout-state": catalogue.rollout_state,
        "dead-letters": catalogue.dead_letters,
        "preflight-results": catalogue.preflight_results,
        "preflights": catalogue.preflights,
    }[args.topic]
    consumer = open_tail(settings, topic, "canary-tail", from_beginning=args.from_beginning)
    printed = 0
    last = time.monotonic()
    try:
        while args.max is None or printed < args.max:
            msgs = consume(consumer, 100, 0.5)
            if not msgs and args.idle_exit and time.monotonic() - last > args.idle_exit:
                break
            for msg in msgs:
                last = time.monotonic()
                view = message_json(msg.value() or b"", h.as_list(msg.headers()), msg.key())
                print(json.dumps(view), flush=True)
                printed += 1
                if args.max is not None and printed >= args.max:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def message_json(value: bytes, headers: h.RawHeaders, key: bytes | None = None) -> dict[str, Any]:
    """A message as JSON: a dead letter with why and where from; a record in its JSON form
    (Avro or JSON on the wire); anything else as text or base64, with its headers."""
    meta = h.header_dict(headers)
    if h.DLQ_REASON in meta:
        return dead_letter_json(value, meta, key)
    if is_json(meta.get(h.CONTENT_TYPE)):
        try:
            return {"type": "json", **_object(json.loads(value))}
        except (ValueError, UnicodeDecodeError):
            pass
    try:
        return record_json(decode_any(value))
    except DecodeError:
        return {**_payload("value", value), "headers": meta}


def dead_letter_json(value: bytes, meta: dict[str, str], key: bytes | None) -> dict[str, Any]:
    """A dead letter: ``reason``, ``detail``, ``source`` (topic, partition, offset), ``agent``,
    ``key``, the message (JSON, text or base64) and its own headers."""

    def number(name: str) -> int | str:
        raw = meta.get(name, "")
        return int(raw) if raw.lstrip("-").isdigit() else raw

    return {
        "type": "DeadLetter",
        "reason": meta.get(h.DLQ_REASON, ""),
        "detail": meta.get(h.DLQ_DETAIL, ""),
        "source": {
            "topic": meta.get(h.DLQ_TOPIC, ""),
            "partition": number(h.DLQ_PARTITION),
            "offset": number(h.DLQ_OFFSET),
        },
        "agent": meta.get(h.DLQ_AGENT, ""),
        **_payload("key", key),
        **_payload("value", value),
        "headers": {k: v for k, v in meta.items() if not k.startswith("canary-dlq-")},
    }


def _payload(name: str, data: bytes | None) -> dict[str, Any]:
    """``{name: JSON value or text}``, or ``{name_base64: ...}`` for binary data."""
    if data is None:
        return {name: None}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(data).decode()}
    try:
        return {name: json.loads(text)} if name == "value" else {name: text}
    except ValueError:
        return {name: text}


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {"value": value}


def record_json(record: object) -> dict[str, Any]:
    """A record's JSON form (:func:`~model_canary.streams.codec.json_records.to_json_doc`)
    with its type."""
    return {"type": type(record).__name__, **to_json_doc(record)}


def _finite(text: str) -> float:
    """An argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def _attribute(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--attr {text!r}: expected KEY=VALUE, e.g. complaint=yes")
    return key, value
