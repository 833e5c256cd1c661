"""Tiny in-process models for the integration tests (``python:tests.integration.models:NAME``)."""

from __future__ import annotations

from typing import Any


def echo(batch: list[Any]) -> list[Any]:
    """Answer each request with an OIP response whose prediction is the request's first value."""
    out: list[Any] = []
    for body in batch:
        first = (body.get("inputs") or [{}])[0].get("data", [None])[0] if body else None
        out.append(
            {"outputs": [{"name": "echo", "shape": [1], "datatype": "FP64", "data": [first]}]}
        )
    return out


def same(batch: list[Any]) -> list[Any]:
    """Answer each request with its own input."""
    return list(batch)


def fails_on_negative(batch: list[Any]) -> list[Any]:
    """Like :func:`echo`, but a negative first value is an error for that request only."""
    out = echo(batch)
    for i, resp in enumerate(out):
        value = resp["outputs"][0]["data"][0]
        if isinstance(value, int | float) and value < 0:
            out[i] = ValueError(f"negative input {value}")
    return out


def negate(batch: list[Any]) -> list[Any]:
    """Like :func:`echo` but answers the negated value: a model that is always wrong."""
    out = echo(batch)
    for resp in out:
        data = resp["outputs"][0]["data"]
        data[0] = -data[0] if isinstance(data[0], int | float) else data[0]
    return out


def huge_on_negative(batch: list[Any]) -> list[Any]:
    """Like :func:`echo`, but a negative first value gets a 2 MB answer: more than the results
    topic takes."""
    out = echo(batch)
    for resp in out:
        value = resp["outputs"][0]["data"][0]
        if isinstance(value, int | float) and value < 0:
            resp["outputs"][0]["data"] = [value] * 300_000
    return out
