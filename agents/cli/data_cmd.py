"""``canary request`` (send one request, print its result) and ``canary tail``."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

from model_canary.agents.cli.common import settings_from_args
from model_canary.agents.client.inference import CanaryClient, InferenceError
from model_canary.agents.client.tail import open_tail
from model_canary.agents.kafka.clients import consume
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import decode_any
from model_canary.streams.codec.requests import canonical_json
from model_canary.streams.errors import ConfigError, DecodeError
from model_canary.streams.messages import epoch_ms
from model_canary.streams.topics import TopicCatalogue

TAILS = ("results", "metrics", "events", "control", "feedback", "dead-letters")


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

    tail = sub.add_parser("tail", parents=[common], help="print a topic's records as JSON lines")
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


def run_tail(args: argparse.Namespace) -> int:
    import time

    settings = settings_from_args(args)
    catalogue = TopicCatalogue(settings.topic_prefix)
    topic = {
        "results": catalogue.results,
        "metrics": catalogue.metrics,
        "events": catalogue.events,
        "control": catalogue.control,
        "feedback": catalogue.feedback,
        "dead-letters": catalogue.dead_letters,
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
                print(
                    json.dumps(message_json(msg.value() or b"", h.as_list(msg.headers()))),
                    flush=True,
                )
                printed += 1
                if args.max is not None and printed >= args.max:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def message_json(value: bytes, headers: h.RawHeaders) -> dict[str, Any]:
    """A record as JSON; a value that is not one of ours (a dead letter) as base64."""
    try:
        return record_json(decode_any(value))
    except DecodeError:
        return {
            "value_base64": base64.b64encode(value).decode(),
            "headers": h.header_dict(headers),
        }


def record_json(record: object) -> dict[str, Any]:
    import dataclasses
    from datetime import datetime
    from enum import Enum

    def conv(value: Any) -> Any:
        if isinstance(value, bytes):
            try:
                return json.loads(value)
            except (ValueError, UnicodeDecodeError):
                return base64.b64encode(value).decode()
        if isinstance(value, datetime):
            return epoch_ms(value)
        if isinstance(value, Enum):
            return value.value
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: conv(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [conv(v) for v in value]
        if isinstance(value, dict):
            return {k: conv(v) for k, v in value.items()}
        return value

    out: dict[str, Any] = {"type": type(record).__name__}
    out.update(conv(record))
    return out
