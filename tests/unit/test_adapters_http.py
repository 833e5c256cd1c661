"""oip: and openai: adapters against a real local HTTP server (OIP v2 + OpenAI chat)."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from model_canary.agents.worker.adapters import (
    CONNECTION,
    TIMEOUT,
    ModelAdapter,
    ModelInput,
    load_adapter,
    predict_safely,
)
from model_canary.agents.worker.adapters.oip_http import OipHttpAdapter
from model_canary.agents.worker.adapters.openai_http import OpenAiHttpAdapter
from model_canary.streams.errors import ConfigError

SECRET = "sk-test-do-not-log-0123456789"
Loader = Callable[..., ModelAdapter]


@dataclass
class Seen:
    """What the server saw: requests, client ports, headers, concurrency."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    ports: set[int] = field(default_factory=set)
    in_flight: int = 0
    max_in_flight: int = 0
    proxied: list[str] = field(default_factory=list)  # absolute URLs asked of a proxy
    peers: list[str] = field(default_factory=list)  # client certificates' common names
    flaky: int = 0  # 503 answers still to give on /v2/models/flaky


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real model servers
    wbufsize = -1  # one write per response (avoids Nagle + delayed-ACK stalls)
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        seen = self.server.seen
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with seen.lock:
            seen.in_flight += 1
            seen.max_in_flight = max(seen.max_in_flight, seen.in_flight)
            seen.ports.add(self.client_address[1])
            seen.headers.append({k.lower(): v for k, v in self.headers.items()})
        try:
            self.route(raw)
        finally:
            with seen.lock:
                seen.in_flight -= 1

    def route(self, raw: bytes) -> None:
        path = self.path
        if path.startswith("http://"):  # asked as a proxy: answer as the target would
            self.server.seen.proxied.append(path)
            path = "/" + path.split("/", 3)[3]
        peer = getattr(self.connection, "getpeercert", lambda: None)()
        if peer:
            self.server.seen.peers.append(dict(x[0] for x in peer["subject"])["commonName"])
        if path == "/v2/models/flaky/infer":
            with self.server.seen.lock:
                self.server.seen.flaky -= 1
                failing = self.server.seen.flaky >= 0
            if failing:
                self.reply(503, {"error": "warming up"})
                return
            path = "/v2/models/sum/infer"
        if path == "/v2/models/sum/infer":
            body = json.loads(raw)
            self.server.seen.bodies.append(body)
            tensor = body["inputs"][0]
            time.sleep(float(tensor.get("parameters", {}).get("sleep", 0)))
            outputs = [
                {"name": "sum", "shape": [1], "datatype": "FP64", "data": [sum(tensor["data"])]}
            ]
            self.reply(200, {"model_name": "sum", "id": body.get("id"), "outputs": outputs})
        elif path == "/v2/models/broken/infer":
            self.reply(500, {"error": "model exploded"})
        elif path == "/v2/models/slow/infer":
            time.sleep(1.5)
            self.reply(200, {"outputs": []})
        elif path == "/v2/models/hangup/infer":
            self.reply(200, {"outputs": [{"name": "y", "data": [1]}]})
            self.close_connection = True  # closes without "Connection: close", like an idle timeout
        elif path == "/v2/models/text/infer":
            self.reply(200, b"plain words", "text/plain")
        elif path == "/v1/chat/completions":
            body = json.loads(raw)
            self.server.seen.bodies.append(body)
            content = body["messages"][-1]["content"].upper()
            choice = {"index": 0, "message": {"role": "assistant", "content": content}}
            usage = {"prompt_tokens": 7, "completion_tokens": len(content.split())}
            answer = {"id": "c1", "model": body.get("model"), "choices": [choice], "usage": usage}
            self.reply(200, answer)
        elif path == "/limited/v1/chat/completions":
            self.reply(429, {"error": {"message": "rate limited", "type": "requests"}})
        else:
            self.reply(404, {"error": f"no route {path}"})

    def reply(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64  # the default 5 drops SYNs when 8 clients connect at once
    seen: Seen


def serving(context: ssl.SSLContext | None = None) -> Iterator[Server]:
    """The test server in a thread (over TLS with ``context``), shut down afterwards."""
    srv = Server(("127.0.0.1", 0), Handler)
    if context is not None:
        srv.socket = context.wrap_socket(srv.socket, server_side=True)
    srv.seen = Seen()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    yield from serving()


@pytest.fixture
def load() -> Iterator[Loader]:
    """load_adapter, closing every adapter after the test."""
    made: list[ModelAdapter] = []

    def make(spec: str, **kwargs: Any) -> ModelAdapter:
        made.append(load_adapter(spec, **kwargs))
        return made[-1]

    yield make
    for adapter in made:
        adapter.close()


def base(srv: Server) -> str:
    host, port = srv.server_address[:2]
    return f"http://{host!s}:{port}"


def oip_request(data: list[float], sleep: float = 0.0) -> bytes:
    tensor: dict[str, Any] = {"name": "input-0", "shape": [len(data)], "datatype": "FP64"}
    tensor["data"] = data
    if sleep:
        tensor["parameters"] = {"sleep": sleep}
    return json.dumps({"inputs": [tensor]}).encode()


def chat(text: str, **extra: Any) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": text}], **extra}).encode()


def test_oip_batch_results_in_order(load: Loader, server: Server) -> None:
    adapter = load(f"oip:{base(server)}/v2/models/sum/")
    assert isinstance(adapter, OipHttpAdapter) and adapter.name == "sum"
    batch = [ModelInput(f"r{i}", oip_request([i, 1.5])) for i in range(10)]
    out = adapter.predict(batch)
    assert [o.prediction for o in out] == [str(i + 1.5) for i in range(10)]
    assert all(o.ok and o.content_type == "application/json" for o in out)
    assert json.loads(out[3].outputs)["outputs"][0]["data"] == [4.5]
    assert {h["content-type"] for h in server.seen.headers} == {"application/json"}
    assert "authorization" not in server.seen.headers[0]


def test_oip_reuses_connections(load: Loader, server: Server) -> None:
    adapter = load(f"oip:{base(server)}/v2/models/sum")
    for i in range(5):
        assert adapter.predict([ModelInput(f"r{i}", oip_request([1.0]))])[0].ok
    assert len(server.seen.ports) == 1


def test_oip_retries_once_when_the_server_dropped_a_kept_alive_connection(
    load: Loader, server: Server
) -> None:
    adapter = load(f"oip:{base(server)}/v2/models/hangup")
    for i in range(3):
        assert adapter.predict([ModelInput(f"r{i}", oip_request([1.0]))])[0].prediction == "1"
        time.sleep(0.05)
    assert len(server.seen.ports) == 3


@pytest.mark.parametrize("limit", [1, 3])
def test_oip_concurrency_limit(load: Loader, server: Server, limit: int) -> None:
    adapter = load(f"oip:{base(server)}/v2/models/sum?concurrency={limit}")
    batch = [ModelInput(f"r{i}", oip_request([1.0], sleep=0.1)) for i in range(6)]
    started = time.monotonic()
    out = adapter.predict(batch)
    elapsed = time.monotonic() - started
    assert all(o.ok for o in out)
    assert server.seen.max_in_flight == limit
    assert elapsed >= 0.1 * 6 / limit * 0.9


def test_oip_http_errors_and_non_json_answers(load: Loader, server: Server) -> None:
    broken = load(f"oip:{base(server)}/v2/models/broken")
    out = broken.predict([ModelInput("r1", oip_request([1.0]))])[0]
    assert (out.error_type, out.error) == ("http-500", "HTTP 500: model exploded")
    missing = load(f"oip:{base(server)}/v2/models/missing")
    assert missing.predict([ModelInput("r1", oip_request([1.0]))])[0].error_type == "http-404"
    text = load(f"oip:{base(server)}/v2/models/text")
    answer = text.predict([ModelInput("r1", oip_request([1.0]))])[0]
    assert answer.ok and answer.prediction is None
    assert (answer.outputs, answer.content_type) == (b"plain words", "text/plain")


def test_oip_slow_server_times_out_per_request(load: Loader, server: Server) -> None:
    adapter = load(f"oip:{base(server)}/v2/models/slow", timeout_s=0.3)
    started = time.monotonic()
    out = adapter.predict([ModelInput(f"r{i}", oip_request([1.0])) for i in range(3)])
    assert time.monotonic() - started < 1.2
    assert [o.error_type for o in out] == [TIMEOUT] * 3
    # the connection that timed out is dropped; the adapter keeps working
    fast = OipHttpAdapter.from_url(f"{base(server)}/v2/models/sum", timeout_s=0.3)
    assert fast.predict([ModelInput("r", oip_request([2.0]))])[0].prediction == "2.0"
    fast.close()


def test_oip_under_predict_safely_with_a_shorter_batch_timeout(
    load: Loader, server: Server
) -> None:
    adapter = load(f"oip:{base(server)}/v2/models/slow", timeout_s=5.0)
    started = time.monotonic()
    out = predict_safely(adapter, [ModelInput("r", oip_request([1.0]))], timeout_s=0.2)
    assert time.monotonic() - started < 1.0 and out[0].error_type == TIMEOUT


def test_connection_refused_is_an_error_output(
    load: Loader,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adapter = load(f"oip:http://127.0.0.1:{port}/v2/models/m", timeout_s=1.0)
    out = adapter.predict([ModelInput("r1", b"{}"), ModelInput("r2", b"{}")])
    assert [o.error_type for o in out] == [CONNECTION] * 2
    assert out[0].error is not None and "Connection refused" in out[0].error


def test_openai_fills_model_forces_stream_off_and_reads_content(
    load: Loader, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    adapter = load(f"openai:{base(server)}/v1/?model=tiny-llm")
    assert isinstance(adapter, OpenAiHttpAdapter) and adapter.name == "tiny-llm"
    out = adapter.predict(
        [
            ModelInput("r1", chat("spam?", stream=True)),
            ModelInput("r2", chat("ham", model="other")),
            ModelInput("r3", b"not json"),
            ModelInput("r4", b"[1, 2]"),
        ]
    )
    assert [o.prediction for o in out[:2]] == ["SPAM?", "HAM"]
    assert dict(out[0].measures) == {"prompt_tokens": 7.0, "completion_tokens": 1.0}
    assert json.loads(out[0].outputs)["choices"][0]["message"]["content"] == "SPAM?"
    assert [o.error_type for o in out[2:]] == ["bad-input", "bad-input"]
    bodies = sorted(server.seen.bodies, key=lambda b: b["messages"][0]["content"])
    assert [(b["model"], b["stream"]) for b in bodies] == [("other", False), ("tiny-llm", False)]
    assert all("authorization" not in h for h in server.seen.headers)


def test_openai_api_key_from_env_and_named_variable(
    load: Loader, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("MY_LLM_KEY", SECRET + "-2")
    default = load(f"openai:{base(server)}/v1")
    named = load(f"openai:{base(server)}/v1?api_key_env=MY_LLM_KEY&concurrency=2")
    assert default.predict([ModelInput("r1", chat("a"))])[0].ok
    assert named.predict([ModelInput("r2", chat("b"))])[0].ok
    auth = [h["authorization"] for h in server.seen.headers]
    assert auth == [f"Bearer {SECRET}", f"Bearer {SECRET}-2"]
    assert default.name == "openai"
    assert isinstance(named, OpenAiHttpAdapter)
    for shown in (repr(default), repr(vars(default)), repr(named.client)):
        assert SECRET not in shown
    with pytest.raises(ConfigError, match="'UNSET_XYZ'") as info:
        load(f"openai:{base(server)}/v1?api_key_env=UNSET_XYZ")
    assert SECRET not in str(info.value)


def test_openai_error_status(load: Loader, server: Server) -> None:
    adapter = load(f"openai:{base(server)}/limited/v1?model=m")
    out = adapter.predict([ModelInput("r1", chat("x"))])[0]
    assert (out.error_type, out.error) == ("http-429", "HTTP 429: rate limited")


def test_retries_answers_that_say_try_again(load: Loader, server: Server) -> None:
    server.seen.flaky = 2
    adapter = load(f"oip:{base(server)}/v2/models/flaky")
    assert adapter.predict([ModelInput("r1", oip_request([1.0, 2.0]))])[0].prediction == "3.0"
    server.seen.flaky = 1
    strict = load(f"oip:{base(server)}/v2/models/flaky?retries=0")
    out = strict.predict([ModelInput("r2", oip_request([1.0]))])[0]
    assert (out.error_type, out.error) == ("http-503", "HTTP 503: warming up")
    with pytest.raises(ConfigError, match="retries must be an integer"):
        load(f"oip:{base(server)}/v2/models/flaky?retries=many")


def test_proxies_from_the_environment_the_spec_and_no_proxy(
    load: Loader, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server plays the proxy; the model server's name does not resolve, so an
    # answer proves the request went through the proxy.
    target = "http://model.invalid:8000/v2/models/sum"
    monkeypatch.setenv("HTTP_PROXY", base(server))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    via_env = load(f"oip:{target}")
    assert via_env.predict([ModelInput("r1", oip_request([2.0]))])[0].prediction == "2.0"
    assert server.seen.proxied == [f"{target}/infer"]
    monkeypatch.setenv("NO_PROXY", "localhost,.invalid")
    bypassed = load(f"oip:{target}", timeout_s=2.0)
    assert bypassed.predict([ModelInput("r2", oip_request([2.0]))])[0].error_type == CONNECTION
    host, port = server.server_address[:2]
    spec_proxy = load(f"oip:{target}?proxy=http://user:pw@{host!s}:{port}")
    assert spec_proxy.predict([ModelInput("r3", oip_request([3.0]))])[0].ok
    assert server.seen.headers[-1]["proxy-authorization"] == "Basic dXNlcjpwdw=="
    direct = load(f"oip:{base(server)}/v2/models/sum?proxy=none")
    assert direct.predict([ModelInput("r4", oip_request([4.0]))])[0].ok
    assert len(server.seen.proxied) == 2


@dataclass(frozen=True)
class Pki:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=test-ca")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, ext in (("server", ["-extfile", "san.ext"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN=canary-{name}")  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *ext)  # fmt: skip
    return Pki(*(str(d / f) for f in ("ca.pem", "server.pem", "server.key", "client.pem",
                                      "client.key")))  # fmt: skip


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[Server]:
    """The test server over TLS, demanding a client certificate signed by the CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    yield from serving(context)


def test_tls_with_a_client_certificate(load: Loader, tls_server: Server, pki: Pki) -> None:
    port = tls_server.server_address[1]
    url = f"https://127.0.0.1:{port}/v2/models/sum"
    adapter = load(f"oip:{url}?ca={pki.ca}&cert={pki.client_cert}&key={pki.client_key}")
    assert adapter.predict([ModelInput("r1", oip_request([1.0, 1.0]))])[0].prediction == "2.0"
    assert tls_server.seen.peers == ["canary-client"]
    anonymous = load(f"oip:{url}?ca={pki.ca}&retries=0", timeout_s=2.0)
    refused = anonymous.predict([ModelInput("r2", oip_request([1.0]))])[0]
    assert refused.error_type == CONNECTION
    untrusted = load(f"oip:{url}?cert={pki.client_cert}&key={pki.client_key}&retries=0")
    out = untrusted.predict([ModelInput("r3", oip_request([1.0]))])[0]
    assert out.error_type == CONNECTION and out.error is not None and "CERTIFICATE" in out.error
    assert tls_server.seen.peers == ["canary-client"]
    with pytest.raises(ConfigError, match="no such file"):
        load(f"oip:{url}?ca=/nonexistent/ca.pem")
