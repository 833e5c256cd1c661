"""Reading an agent's Prometheus ``/metrics`` from a benchmark (the agent's own figures).

>>> parse("canary_x{arm=\\"a\\"} 2.0\\n# HELP y\\ncanary_y 3\\n")
{'canary_x{arm="a"}': 2.0, 'canary_y': 3.0}
>>> total(parse('canary_x{a="1"} 2\\ncanary_x{a="2"} 3\\ncanary_z 1\\n'), "canary_x")
5.0
"""

from __future__ import annotations

import socket
import urllib.parse
import urllib.request
from collections.abc import Sequence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def scrape(port: int, timeout: float = 2.0, names: Sequence[str] = ()) -> dict[str, float] | None:
    """The metrics served on ``port`` (None while nothing answers); with ``names``, only those
    samples: the exporter's ``name[]`` filter, which then collects only their metrics (a
    benchmark that scrapes an agent twice a second otherwise charges it for rendering every
    metric it has, Prometheus scraping every 15 s does not).

    >>> query(["canary_a_total", "canary_b"])
    '?name%5B%5D=canary_a_total&name%5B%5D=canary_b'
    """
    try:
        url = f"http://127.0.0.1:{port}/metrics{query(names)}"
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return parse(r.read().decode())
    except OSError:
        return None


def query(names: Sequence[str]) -> str:
    """The query string that restricts a scrape to the samples ``names`` ('' for all)."""
    return "?" + urllib.parse.urlencode([("name[]", n) for n in names]) if names else ""


def total(metrics: dict[str, float], name: str, *, having: str = "") -> float:
    """Sum of every series of ``name`` whose labels contain ``having``."""
    return sum(
        v for k, v in metrics.items() if (k == name or k.startswith(name + "{")) and having in k
    )
