"""A keyed request load with ground truth delivered later (``canary load`` and the demo).

Each request carries one example input (by default a held-out iris row; any model's inputs
from a file of examples, see :func:`read_examples`) and a routing key drawn from ``keys``
users; its true label, when the example has one, goes to the feedback topic ``label_delay``
seconds after it was sent, as labels arrive in real systems. A small share of requests is
malformed, like the odd broken client: every version fails those alike, which gives the
error-rate comparison events on both arms.

>>> gen = LoadGenerator(Settings(), LoadOptions(rate=50, duration=10),
...                     [Example(b'{"x": 1}', "1")])  # sends nothing yet
>>> # gen.run(threading.Event())
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model_canary.agents.client.feedback import FeedbackClient
from model_canary.agents.client.inference import CanaryClient
from model_canary.agents.demo.models import held_out
from model_canary.streams.codec.requests import canonical_json, oip_request
from model_canary.streams.errors import ConfigError
from model_canary.streams.settings import Settings

#: How often the pacing loop wakes up (seconds).
TICK_S = 0.02


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What to send: ``rate`` requests per second for ``duration`` seconds (None: until
    stopped), labels after ``label_delay`` seconds, ``bad_input`` share malformed; keys drawn
    uniformly from ``keys`` users, or with ``key_skew`` > 0 from a Zipf law (user ``i``'s share
    proportional to ``1 / i ** key_skew``: a few heavy users, as in real traffic)."""

    model: str = "iris"
    rate: float = 50.0
    duration: float | None = None
    label_delay: float = 2.0
    keys: int = 10_000
    bad_input: float = 0.03
    seed: int = 1
    id_prefix: str = "load"
    key_skew: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 100_000:
            raise ConfigError(f"rate must lie in (0, 100000] requests/s, got {self.rate!r}")
        if self.duration is not None and self.duration <= 0:
            raise ConfigError(f"duration must be positive, got {self.duration!r}")
        if self.label_delay < 0 or self.keys < 1 or not 0 <= self.bad_input <= 1:
            raise ConfigError("label delay >= 0, keys >= 1 and bad-input share in 0..1 expected")
        if not 0 <= self.key_skew <= 5:
            raise ConfigError(f"key skew must lie in [0, 5], got {self.key_skew!r}")


@dataclass(frozen=True, slots=True)
class Example:
    """One request's model input (JSON bytes, sent as the request's ``inputs``), its true
    label if known, and what a broken client would send instead (by default the input cut
    short: not JSON, so every version fails it alike)."""

    inputs: bytes
    label: str | None = None
    malformed: bytes | None = None

    @property
    def broken(self) -> bytes:
        return self.malformed if self.malformed is not None else self.inputs[:-1]


def iris_examples() -> list[Example]:
    """The held-out iris rows as OIP requests, each malformed by dropping a feature (needs
    the ``sklearn`` extra, which ships the data set)."""
    data = held_out()
    examples = []
    for features, label in zip(data.features, data.labels, strict=True):
        row = [float(v) for v in features]
        examples.append(
            Example(
                oip_request({"input-0": [row]}),
                str(int(label)),
                oip_request({"input-0": [row[:3]]}),
            )
        )
    return examples


def read_examples(path: Path) -> list[Example]:
    """Examples from a JSON Lines file, one request per line, for any model.

    A line is the model input itself (any JSON value: an OIP request, a chat request, the
    value a ``python:`` function receives), or ``{"inputs": VALUE, "label": "..."}`` for an
    input with its ground truth. Blank lines and lines starting with ``#`` are skipped.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "examples.jsonl"
    >>> _ = f.write_text('{"x": [1, 2]}\\n{"inputs": {"x": [3, 4]}, "label": "yes"}\\n')
    >>> [(e.inputs, e.label) for e in read_examples(f)]
    [(b'{"x":[1,2]}', None), (b'{"x":[3,4]}', 'yes')]
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read examples from {path}: {exc}") from None
    examples = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{path}, line {number}: not JSON: {exc}") from None
        label = None
        if isinstance(value, dict) and "label" in value and set(value) <= {"inputs", "label"}:
            label = value["label"]
            if not isinstance(label, str | int) or isinstance(label, bool) or "inputs" not in value:
                raise ConfigError(
                    f"{path}, line {number}: a labelled example is "
                    '{"inputs": VALUE, "label": "TEXT"}'
                )
            value, label = value["inputs"], str(label)
        examples.append(Example(canonical_json(value), label))
    if not examples:
        raise ConfigError(f"{path} holds no example")
    return examples


class LoadGenerator:
    """Sends the load from :meth:`run` (in any thread). ``sent`` maps every request id sent to
    its true label (None for a malformed request or an example without one); other threads
    may read it meanwhile. ``examples`` default to the iris rows."""

    def __init__(
        self, settings: Settings, options: LoadOptions, examples: Sequence[Example] | None = None
    ) -> None:
        self.settings = settings
        self.options = options
        self.examples = list(examples) if examples is not None else iris_examples()
        if not self.examples:
            raise ConfigError("a load needs at least one example")
        self.sent: dict[str, str | None] = {}
        self.labels_sent = 0
        self._rng = random.Random(options.seed)
        self._key_cdf: list[float] | None = None
        if options.key_skew > 0:
            weights = [1.0 / (i + 1) ** options.key_skew for i in range(options.keys)]
            self._key_cdf = list(itertools.accumulate(weights))

    def run(self, stop: threading.Event, *, deliver_pending_labels: bool = True) -> None:
        """Send until ``stop`` is set or the duration is over; then, with
        ``deliver_pending_labels``, wait out the label delay so every label is sent."""
        o = self.options
        pending: deque[tuple[float, str, str]] = deque()
        client = CanaryClient(self.settings)
        labels = FeedbackClient(self.settings, source="canary-load")
        began = time.monotonic()
        try:
            while not stop.is_set():
                elapsed = time.monotonic() - began
                if o.duration is not None and elapsed >= o.duration:
                    break
                while len(self.sent) < int(elapsed * o.rate) + 1:
                    self._send_one(client, pending)
                self._label_due(labels, pending, time.monotonic())
                stop.wait(TICK_S)
            client.flush()
            while deliver_pending_labels and pending and not stop.is_set():
                self._label_due(labels, pending, time.monotonic())
                stop.wait(TICK_S)
        finally:
            client.close()
            labels.close()

    def _send_one(self, client: CanaryClient, pending: deque[tuple[float, str, str]]) -> None:
        o = self.options
        n = len(self.sent)
        example = self.examples[n % len(self.examples)]
        rid = f"{o.id_prefix}-{n}"
        key = f"user-{self._user()}"
        inputs, label = example.inputs, example.label
        if self._rng.random() < o.bad_input:
            inputs, label = example.broken, None  # a client that lost a column
        self.sent[rid] = label
        client.send(inputs, model=o.model, key=key, request_id=rid, flush=False)
        if label is not None:
            pending.append((time.monotonic() + o.label_delay, rid, label))

    def _user(self) -> int:
        """A user index: uniform, or Zipf-distributed with ``key_skew``."""
        if self._key_cdf is None:
            return self._rng.randrange(self.options.keys)
        x = self._rng.random() * self._key_cdf[-1]
        return min(bisect.bisect_right(self._key_cdf, x), self.options.keys - 1)

    def _label_due(
        self, labels: FeedbackClient, pending: deque[tuple[float, str, str]], now: float
    ) -> None:
        while pending and pending[0][0] <= now:
            _due, rid, label = pending.popleft()
            labels.send(rid, model=self.options.model, label=label)
            self.labels_sent += 1
