"""Reading an agent's Prometheus ``/metrics`` from a benchmark (the agent's own figures).

>>> parse("canary_x{arm=\\"a\\"} 2.0\\n# HELP y\\ncanary_y 3\\n")
{'canary_x{arm="a"}': 2.0, 'canary_y': 3.0}
>>> total(parse('canary_x{a="1"} 2\\ncanary_x{a="2"} 3\\ncanary_z 1\\n'), "canary_x")
5.0
"""

from __future__ import annotations

import socket
import urllib.request


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


def scrape(port: int, timeout: float = 2.0) -> dict[str, float] | None:
    """The metrics served on ``port`` (None while nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            return parse(r.read().decode())
    except OSError:
        return None


def total(metrics: dict[str, float], name: str, *, having: str = "") -> float:
    """Sum of every series of ``name`` whose labels contain ``having``."""
    return sum(
        v for k, v in metrics.items() if (k == name or k.startswith(name + "{")) and having in k
    )
