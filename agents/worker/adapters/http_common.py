"""What the HTTP adapters share: spec URL parsing, a pooled keep-alive HTTP client (urllib3)
with retries, proxies and TLS client certificates, and a base class that sends a batch's
requests concurrently from a small thread pool and turns every failure into an error output.

Options every HTTP adapter takes in its spec's query string (besides its own)::

    concurrency=N          requests in flight at once (default 8, at most 256)
    retries=N              retries of a request that could not connect or was answered 429,
                           502, 503 or 504, with exponential backoff from 0.1 s (default 2;
                           a request the server may have started is never sent again)
    proxy=URL              an HTTP(S) proxy, credentials in the URL (http://user:pw@proxy:3128);
                           without it HTTPS_PROXY / HTTP_PROXY / NO_PROXY of the environment
                           apply, as for curl; proxy=none ignores them
    ca=PATH                CA certificates (PEM) that verify the server (default: the system's,
                           or SSL_CERT_FILE)
    cert=PATH, key=PATH    a TLS client certificate and its key (PEM; the key may sit in cert)
    key_password_env=VAR   the environment variable holding the key's password

The worker's ``--timeout`` bounds connecting and each read of every request.

>>> url, params = split_url("http://127.0.0.1:8000/v2/models/iris?concurrency=4",
...                         usage="oip:URL", allowed=("concurrency",))
>>> url, concurrency(params)
('http://127.0.0.1:8000/v2/models/iris', 4)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

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
from model_canary.streams.errors import CanaryError, ConfigError

DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 256
DEFAULT_RETRIES = 2
MAX_RETRIES = 10
#: Statuses that say "try again later": retried like a refused connection.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: The options of :class:`HttpOptions`, accepted by every HTTP adapter's spec.
TRANSPORT_OPTIONS = ("concurrency", "retries", "proxy", "ca", "cert", "key", "key_password_env")


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


class HttpTransportError(CanaryError):
    """A request got no HTTP answer: no connection, a proxy or TLS failure, or a timeout."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """How requests travel (see the module docs for the spec options).

    >>> HttpOptions.from_params({"retries": "0", "proxy": "none"}).retries
    0
    """

    retries: int = DEFAULT_RETRIES
    proxy: str | None = None  # None: the environment's; "" (proxy=none): none
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    key_password: str | None = None

    @classmethod
    def from_params(
        cls, params: Mapping[str, str], environ: Mapping[str, str] | None = None
    ) -> HttpOptions:
        """The transport options of a spec's query; :class:`ConfigError` for a bad value."""
        env = os.environ if environ is None else environ
        raw = params.get("retries")
        retries = DEFAULT_RETRIES
        if raw is not None:
            retries = int(raw) if raw.isdigit() else -1
            if not 0 <= retries <= MAX_RETRIES:
                raise ConfigError(f"retries must be an integer 0..{MAX_RETRIES}, got {raw!r}")
        proxy = params.get("proxy")
        if proxy is not None and proxy.lower() == "none":
            proxy = ""
        elif proxy is not None and urlsplit(proxy).scheme not in ("http", "https"):
            raise ConfigError(f"proxy must be an http:// or https:// URL, got {proxy!r}")
        for name in ("ca", "cert", "key"):
            path = params.get(name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{name}={path!r}: no such file")
        if params.get("key") and not params.get("cert"):
            raise ConfigError("key= needs cert= (the client certificate)")
        password_env = params.get("key_password_env")
        if password_env is not None and not env.get(password_env):
            raise ConfigError(f"key_password_env names {password_env!r}, but it is not set")
        return cls(
            retries=retries,
            proxy=proxy,
            ca=params.get("ca"),
            cert=params.get("cert"),
            key=params.get("key"),
            key_password=env.get(password_env) if password_env else None,
        )


class HttpClient:
    """POSTs to one server over pooled keep-alive connections (urllib3, thread-safe, at most
    ``max_connections`` open). ``timeout_s`` bounds connecting and each socket read. Extra
    ``headers`` (e.g. authorization) go with every request and are never shown by ``repr``.

    ::

        client = HttpClient("http://127.0.0.1:8000/v2/models/iris", timeout_s=5.0)
        answer = client.post("/infer", b'{"inputs": []}', "application/json")
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        *,
        options: HttpOptions | None = None,
        max_connections: int = DEFAULT_CONCURRENCY,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        # Each retry is logged by urllib3 as a warning: thousands a second for a model server
        # that is down. Failures become error outputs (counted in the worker's metrics).
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.options = options or HttpOptions()
        self._headers = dict(headers or {})
        retries = self.options.retries
        pool: dict[str, Any] = {
            "maxsize": max_connections,
            "block": True,  # never more connections than requests in flight
            "timeout": urllib3.Timeout(connect=timeout_s, read=timeout_s),
            "retries": urllib3.Retry(
                total=None,
                connect=retries,
                read=0,  # the server may have started: never sent twice
                status=retries,
                other=0,
                redirect=False,
                status_forcelist=RETRY_STATUSES,
                allowed_methods=frozenset({"POST"}),
                backoff_factor=0.1,
                backoff_max=2.0,
                raise_on_status=False,  # the last answer is the result
                respect_retry_after_header=False,  # the worker's timeout bounds every batch
            ),
        }
        if self.options.ca:
            pool["ca_certs"] = self.options.ca
        if self.options.cert:
            pool["cert_file"] = self.options.cert
            pool["key_file"] = self.options.key
            pool["key_password"] = self.options.key_password
        self.proxy = _proxy_for(parts.scheme, parts.hostname or "", self.options.proxy, environ)
        self._pool: urllib3.PoolManager
        if self.proxy:
            proxy_parts = urllib3.util.parse_url(self.proxy)
            proxy_headers = (
                urllib3.make_headers(proxy_basic_auth=proxy_parts.auth)
                if proxy_parts.auth
                else None
            )
            self._pool = urllib3.ProxyManager(
                proxy_parts._replace(auth=None).url, proxy_headers=proxy_headers, **pool
            )
        else:
            self._pool = urllib3.PoolManager(**pool)

    @classmethod
    def from_params(
        cls,
        base_url: str,
        params: Mapping[str, str],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> HttpClient:
        """A client with the transport options of a spec's query (as many connections as
        its ``concurrency``)."""
        return cls(
            base_url,
            timeout_s,
            headers,
            options=HttpOptions.from_params(params, environ),
            max_connections=concurrency(params),
            environ=environ,
        )

    def __repr__(self) -> str:
        return f"HttpClient({self.base_url})"

    def post(self, path: str, body: bytes, content_type: str) -> HttpResponse:
        """POST ``body`` to ``base URL + path``; raises :class:`HttpTransportError` when no
        HTTP answer came (after the retries)."""
        headers = {**self._headers, "Content-Type": content_type, "Accept": "application/json"}
        try:
            response = self._pool.request(
                "POST", self.base_url + path, body=body, headers=headers, preload_content=True
            )
        except MaxRetryError as exc:
            reason = exc.reason or exc
            raise HttpTransportError(_describe(reason), timed_out=_timed_out(reason)) from None
        except Urllib3Error as exc:
            raise HttpTransportError(_describe(exc), timed_out=_timed_out(exc)) from None
        content_type = response.headers.get("Content-Type") or "application/octet-stream"
        return HttpResponse(response.status, content_type, response.data)

    def close(self) -> None:
        """Close every pooled connection (a later request opens new ones)."""
        self._pool.clear()


def _proxy_for(
    scheme: str, host: str, configured: str | None, environ: Mapping[str, str] | None
) -> str | None:
    """The proxy URL for a server: the configured one, else the environment's unless NO_PROXY
    names the host; ``None`` for a direct connection."""
    if configured is not None:
        return configured or None
    env = os.environ if environ is None else environ
    lowered = {k.lower(): v for k, v in env.items() if k.lower().endswith("_proxy") and v}
    proxy = lowered.get(f"{scheme}_proxy") or lowered.get("all_proxy")
    if not proxy:
        return None
    no_proxy = lowered.get("no_proxy", "")
    if no_proxy and _bypassed(host, no_proxy):
        return None
    return proxy


def _bypassed(host: str, no_proxy: str) -> bool:
    """Whether NO_PROXY names ``host``: ``*``, or a host name or domain (with or without a
    leading dot) that ``host`` equals or ends in, as curl reads it.

    >>> _bypassed("model.internal", "localhost,.internal"), _bypassed("a.b", "c")
    (True, False)
    >>> _bypassed("10.0.0.7", "10.0.0.7"), _bypassed("x", " * ")
    (True, True)
    """
    host = host.lower().rstrip(".")
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return True
        entry = entry.lstrip("*").lstrip(".").rstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


def _timed_out(exc: BaseException) -> bool:
    # urllib3's NewConnectionError (refused, unreachable) subclasses its ConnectTimeoutError.
    return isinstance(exc, Urllib3Timeout | TimeoutError) and not isinstance(
        exc, NewConnectionError
    )


def _describe(exc: BaseException) -> str:
    """The innermost reason of a urllib3 error, e.g. ``"connection refused"``."""
    text = str(exc)
    marker = "]"  # "<...>: Failed to establish a new connection: [Errno 111] Connection refused"
    if "Errno" in text and marker in text:
        return f"{type(exc).__name__}: {text.rsplit(marker, 1)[1].strip()}"
    return describe(exc)


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
        """Send one input and convert the answer; may raise :class:`HttpTransportError`."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the thread pool (without waiting for requests in flight) and the connections."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def _call_safely(self, item: ModelInput) -> ModelOutput:
        try:
            return self.call_one(item)
        except HttpTransportError as exc:
            if exc.timed_out:
                return error_output(f"no answer within {self.client.timeout_s:g} s", TIMEOUT)
            return error_output(str(exc), CONNECTION)
        except Exception as exc:  # a bug in call_one must not fail the other inputs
            return error_output(describe(exc), EXCEPTION)


def http_error(response: HttpResponse) -> ModelOutput:
    """An error output for a non-2xx answer (``error_type`` ``"http-<status>"``)."""
    return error_output(error_message(response), http_error_type(response.status))
