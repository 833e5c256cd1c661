"""Joining ground-truth labels with predictions, whichever arrives first.

One table row per request id: ``{"label": L | None, "waiting": {arm: entry}, "joined": [arm]}``.
A request has one prediction per arm that answered it: one in canary mode, two in shadow mode
(the served baseline answer and the mirrored canary one), and the label must reach both.
An ``entry`` is ``[rollout_id, is_canary, weight_bp, prediction, routed_at_ms]``.

>>> table: dict[str, object] = {}
>>> add_prediction(table, "r1", "baseline", ["ro", False, 5000, "1", 0])
[]
>>> add_prediction(table, "r1", "canary", ["ro", True, 5000, "2", 0])
[]
>>> [(e[1], label) for e, label in add_label(table, "r1", "1")]
[(False, '1'), (True, '1')]
>>> add_label(table, "r1", "1")  # a duplicate label joins nothing
[]
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

Entry = list[Any]
Joined = list[tuple[Entry, str]]


def _row(table: MutableMapping[str, Any], rid: str) -> dict[str, Any]:
    raw = table.get(rid)
    if isinstance(raw, dict) and "waiting" in raw:
        return raw
    # Rows written before shadow pairs were joined: a bare entry, a label, or a join done.
    row: dict[str, Any] = {"label": None, "waiting": {}, "joined": []}
    if isinstance(raw, list) and len(raw) == 5:
        row["waiting"]["canary" if raw[1] else "baseline"] = raw
    elif isinstance(raw, dict) and raw.get("done"):
        row["joined"] = ["canary", "baseline"]
    elif isinstance(raw, dict) and "label" in raw:
        row["label"] = str(raw["label"])
    return row


def add_prediction(table: MutableMapping[str, Any], rid: str, arm: str, entry: Entry) -> Joined:
    """Record an arm's prediction; returns it with its label when the label came first."""
    row = _row(table, rid)
    if arm in row["joined"] or arm in row["waiting"]:
        return []  # a redelivered metric event: already counted
    joined: Joined = []
    if row["label"] is not None:
        joined.append((entry, row["label"]))
        row["joined"].append(arm)
    else:
        row["waiting"][arm] = entry
    table[rid] = row
    return joined


def add_label(table: MutableMapping[str, Any], rid: str, label: str) -> Joined:
    """Record a request's label; returns the predictions waiting for it (none on a duplicate)."""
    row = _row(table, rid)
    if row["label"] is not None or row["joined"]:
        return []
    row["label"] = label
    joined = [(entry, label) for entry in row["waiting"].values()]
    row["joined"].extend(row["waiting"])
    row["waiting"] = {}
    table[rid] = row
    return joined
