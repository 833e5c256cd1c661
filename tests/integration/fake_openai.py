"""A tiny OpenAI-compatible chat server for tests: ``POST /v1/chat/completions`` answers with a
chat completion whose text depends on the model it is asked for, with token counts.

* model ``helpful``: ``"Sure: <the question, upper case>"``;
* model ``curt``: ``"No."`` for one question in ``curt_share`` (by a hash of the question, so
  replays and reruns answer alike), otherwise as ``helpful``.

>>> with serving() as server:
...     base = f"http://127.0.0.1:{server.server_address[1]}/v1"
>>> base.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def curt(question: str, share: float) -> bool:
    """Whether the ``curt`` model refuses this question."""
    digest = hashlib.sha256(question.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64
    curt_share = 0.3
    requests = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ChatServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/chat/completions":
            self._reply(404, {"error": {"message": f"no route {self.path}"}})
            return
        request = json.loads(body)
        question = str(request["messages"][-1]["content"])
        model = request.get("model", "helpful")
        self.server.requests += 1
        if model == "curt" and curt(question, self.server.curt_share):
            text = "No."
        else:
            text = f"Sure: {question.upper()}"
        answer = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": len(question.split()),
                "completion_tokens": len(text.split()),
                "total_tokens": len(question.split()) + len(text.split()),
            },
        }
        self._reply(200, answer)

    def _reply(self, status: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def serving(curt_share: float = 0.3) -> Iterator[ChatServer]:
    """The server in a thread on a free local port, shut down afterwards."""
    server = ChatServer(("127.0.0.1", 0), _Handler)
    server.curt_share = curt_share
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
