"""The outermost ASGI layer of the service: the body-size limit (413), request metrics, a last resort.

The request body is read here in full (up to ``max_body_bytes``; a ``Content-Length`` over the limit
is refused before reading) and replayed to the app. Every answered request is counted in ``Metrics``
with its status and latency. The app answers its own exceptions (FastAPI exception handlers: 4xx for
a client's error, 500 with an error id for ours); Starlette re-raises an exception after its handler
has answered, and the guard drops it there. An exception that escapes before any answer started goes
to ``on_error``, whose body is sent as a 500.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gigdispatch.service.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (exception, method, path) -> the JSON body of the 500 answer (the callee logs and counts)
OnError = Callable[[BaseException, str, str], dict[str, Any]]


async def send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    """Send a whole JSON response through the ASGI ``send``."""
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _declared_lengths(scope: Scope) -> list[int]:
    """The request's ``Content-Length`` headers (-1 for one that is not a number)."""
    out = []
    for k, v in scope.get("headers", []):
        if k == b"content-length":
            try:
                out.append(int(v))
            except ValueError:
                out.append(-1)
    return out


class GuardMiddleware:
    """Wraps ``app`` (the FastAPI app, also ``.app``) with the body limit and the request metrics (``.metrics``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, on_error: OnError) -> None:
        self.app, self.metrics, self.max_body, self.on_error = app, metrics, int(max_body_bytes), on_error

    def _too_big(self) -> dict[str, Any]:
        msg = f"request body is larger than the limit of {self.max_body} bytes"
        return {"detail": [{"loc": ["body"], "msg": msg, "type": "too_large"}]}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path = scope.get("path", "")
        state = {"status": 0, "started": False}

        async def finish(status: int, body: dict[str, Any]) -> None:
            state["status"], state["started"] = status, True
            await send_json(send, status, body)

        try:
            if any(n > self.max_body for n in _declared_lengths(scope)):
                await finish(413, self._too_big())
                return
            chunks, size, more = [], 0, True
            while more:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                body = msg.get("body", b"")
                size += len(body)
                if size > self.max_body:
                    await finish(413, self._too_big())
                    return
                chunks.append(body)
                more = msg.get("more_body", False)
            whole = b"".join(chunks)
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": whole, "more_body": False}
                return await receive()

            async def tracked_send(msg: Message) -> None:
                if msg["type"] == "http.response.start":
                    state["status"], state["started"] = msg["status"], True
                await send(msg)

            await self.app(scope, replay, tracked_send)
        except Exception as exc:
            if not state["started"]:  # nothing answered it: a 500 with an error id (logged and counted by on_error)
                await finish(500, self.on_error(exc, scope.get("method", ""), path))
            # else the app's exception handler has answered (and logged) it; the re-raise ends here
        finally:
            if state["status"]:
                self.metrics.observe(path, int(state["status"]), time.perf_counter() - t0)
