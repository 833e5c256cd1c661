"""The Avro schemas (``*.avsc``) of every record model-canary puts on Kafka.

One file per record, named after it in snake case; older versions of a schema, kept so their
writer fingerprints stay readable, live in ``history/``.

>>> load_schema("feedback")["name"]
'Feedback'
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from model_canary.streams.errors import ConfigError

SUFFIX = ".avsc"


def schema_dir() -> Path:
    """The directory holding the ``.avsc`` files."""
    return Path(str(files(__name__)))


def schema_names() -> list[str]:
    """Names of the current schemas, sorted (``["control_command", "dead_letter", ...]``)."""
    return sorted(path.stem for path in schema_dir().glob(f"*{SUFFIX}"))


def load_schema(name: str) -> dict[str, Any]:
    """The schema ``<name>.avsc`` as a JSON dict; :class:`ConfigError` if there is none."""
    path = schema_dir() / f"{name}{SUFFIX}"
    if "/" in name or "\\" in name or not path.is_file():
        raise ConfigError(f"no schema named {name!r}; known: {', '.join(schema_names())}")
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema
