"""What the HTTP adapters share: spec URL parsing, a keep-alive HTTP client with one connection
per thread (standard library only), and a base class that sends a batch's requests concurrently
from a small thread pool and turns every failure into an error output.

>>> url, params = split_url("http://127.0.0.1:8000/v2/models/iris?concurrency=4",
...                         usage="oip:URL", allowed=("concurrency",))
>>> url, concurrency(params)
('http://127.0.0.1:8000/v2/models/iris', 4)
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from model_canary.agents.worker.adapters.base import (
    CONNECTION,
    EXCEPTION,
    TIMEOUT,
    ModelInput,
    ModelOutput,
    describe,
    error_output,
    http_error_type,
)
from model_canary.streams.errors import ConfigError

DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 256
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def split_url(url: str, *, usage: str, allowed: Collection[str]) -> tuple[str, dict[str, str]]:
    """Split an adapter URL into the URL without query and its adapter options; ConfigError for a
    non-HTTP URL, an unknown or repeated option (``usage`` says what the spec looks like)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"expected {usage}, got {url!r}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad port in {url!r}: {exc}") from None
    params: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(f"unknown option {key!r} in {usage} (known: {known})")
        if key in params:
            raise ConfigError(f"option {key!r} given twice in {usage}")
        params[key] = value
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return base, params


def concurrency(params: Mapping[str, str]) -> int:
    """The ``concurrency`` option: requests in flight at once (default 8, at most 256).

    >>> concurrency({}), concurrency({"concurrency": "2"})
    (8, 2)
    """
    raw = params.get("concurrency")
    if raw is None:
        return DEFAULT_CONCURRENCY
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CONCURRENCY:
        raise ConfigError(f"concurrency must be an integer 1..{MAX_CONCURRENCY}, got {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """Status, content type and body of an HTTP answer."""

    status: int
    content_type: str
    body: bytes


class HttpClient:
    """POSTs to one server over keep-alive connections, one per calling thread. ``timeout_s``
    bounds connecting and each socket read or write. Extra ``headers`` (e.g. authorization)
    go with every request and are never shown by ``repr``.

    ::

        client = HttpClient("http://127.0.0.1:8000/v2/models/iris", timeout_s=5.0)
        answer = client.post("/infer", b'{"inputs": []}', "application/json")
    """

    def __init__(
        self, base_url: str, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> None:
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self.base_path = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = dict(headers or {})
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []

    def __repr__(self) -> str:
        return f"HttpClient({self._host}:{self._port}{self.base_path})"

    def post(self, path: str, body: bytes, content_type: str) -> HttpResponse:
        """POST ``body`` to ``base path + path``; a reused connection the server closed in the
        meantime is retried once on a fresh one. Raises ``OSError`` (``TimeoutError`` on a
        timeout) or :class:`http.client.HTTPException`."""
        headers = {**self._headers, "Content-Type": content_type, "Accept": "application/json"}
        conn, reused = self._connection()
        try:
            return self._exchange(conn, path, body, headers)
        except _STALE:
            self._discard(conn)
            if not reused:
                raise
        except BaseException:
            self._discard(conn)
            raise
        conn, _ = self._connection()
        try:
            return self._exchange(conn, path, body, headers)
        except BaseException:
            self._discard(conn)
            raise

    def close(self) -> None:
        """Close every connection (threads still using one reconnect on their next call)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def _exchange(
        self, conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]
    ) -> HttpResponse:
        conn.request("POST", self.base_path + path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        content_type = response.getheader("Content-Type") or "application/octet-stream"
        return HttpResponse(response.status, content_type, data)

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.timeout_s)
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn, False

    def _discard(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)


def error_message(response: HttpResponse) -> str:
    """The server's error text: OIP ``{"error": "..."}``, OpenAI ``{"error": {"message": ...}}``
    or the start of the body.

    >>> error_message(HttpResponse(400, "application/json", b'{"error": "bad shape"}'))
    'HTTP 400: bad shape'
    """
    text = response.body[:1000].decode("utf-8", "replace").strip()
    try:
        doc: Any = json.loads(response.body)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict):
            err = err.get("message")
        if isinstance(err, str):
            text = err
    return f"HTTP {response.status}: {text}" if text else f"HTTP {response.status}"


class HttpBatchAdapter:
    """Base of the HTTP adapters: sends each input of a batch as its own request, up to
    ``concurrency`` at once; subclasses implement :meth:`call_one`. Timeouts become
    ``"timeout"`` errors, other connection problems ``"connection"`` errors."""

    def __init__(self, name: str, client: HttpClient, concurrency: int) -> None:
        self.name = name
        self.client = client
        self.concurrency = concurrency
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"{name}-http")

    def predict(self, batch: Sequence[ModelInput]) -> list[ModelOutput]:
        """One request per input, concurrently; outputs in input order; never raises."""
        if len(batch) == 1:
            return [self._call_safely(batch[0])]
        return list(self._pool.map(self._call_safely, batch))

    def call_one(self, item: ModelInput) -> ModelOutput:
        """Send one input and convert the answer; may raise ``OSError``/``HTTPException``."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the thread pool (without waiting for requests in flight) and the connections."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def _call_safely(self, item: ModelInput) -> ModelOutput:
        try:
            return self.call_one(item)
        except TimeoutError:
            return error_output(f"no answer within {self.client.timeout_s:g} s", TIMEOUT)
        except (OSError, http.client.HTTPException) as exc:
            return error_output(describe(exc), CONNECTION)
        except Exception as exc:  # a bug in call_one must not fail the other inputs
            return error_output(describe(exc), EXCEPTION)


def http_error(response: HttpResponse) -> ModelOutput:
    """An error output for a non-2xx answer (``error_type`` ``"http-<status>"``)."""
    return error_output(error_message(response), http_error_type(response.status))
