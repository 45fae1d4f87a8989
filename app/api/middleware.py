"""Per-request context: a request id (logs, ``X-Request-ID``), one access log line, the HTTP metrics, the count
of requests in flight (shutdown waits for them); and the request body's size and time limits."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import body_too_large_message, error_response, unexpected_error_response
from app.api.metrics import ServiceMetrics
from app.logs import request_id_var

logger = logging.getLogger("app.access")

REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED_ROUTE = "unmatched"


class InFlightRequests:
    """Counts the HTTP requests being served, so that shutdown can let them finish before closing the model."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self) -> None:
        self.count += 1
        self._idle.clear()

    def finished(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is being served; False if some still are after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


class RequestContextMiddleware:
    """Gives every HTTP request an id and a start time (``request.state``), logs and measures its answer.

    A plain ASGI middleware rather than ``BaseHTTPMiddleware``: the route runs in the same task, so the
    request id set here is in the context of every log call the request makes.
    """

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, in_flight: InFlightRequests) -> None:
        self.app = app
        self.metrics = metrics
        self.in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started_at"] = started
        token = request_id_var.set(request_id)
        status: int | None = None

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        self.in_flight.started()
        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception as exc:
            if status is not None:
                raise  # the answer has begun; only the server can end it
            # Answered here rather than by Starlette's outermost handler, which re-raises for the server to log
            # the error with its message (and the message may quote the report).
            await unexpected_error_response(exc)(scope, receive, send_with_request_id)
        finally:
            self.in_flight.finished()
            seconds = time.perf_counter() - started
            # The route template, not the path: bounded label values, and no ids from the URL.
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            status = status or 500
            self.metrics.requests.labels(route=route, method=scope["method"], status=str(status)).inc()
            self.metrics.request_seconds.labels(route=route, status=str(status)).observe(seconds)
            logger.info(
                "%s %s %d",
                scope["method"],
                route,
                status,
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Answers 413 for a body over ``max_body_bytes``: at once when Content-Length says so, else as soon as the
    bytes received pass the limit (chunked uploads); and 408 for a body that has not arrived in full
    ``body_timeout_s`` after the request began (a stalled or very slow client must not hold a worker).

    FastAPI's own ``max_body_size`` would do the counting, but it replaces any answer to an oversized
    Content-Length with a plain-text 413, outside the service's error shape.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = body_too_large_message(self.max_body_bytes)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await error_response(413, "payload_too_large", message)(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        received = 0
        complete = False

        async def receive_within_limits() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()  # after the body: waiting for a disconnect is no body read
            try:
                async with asyncio.timeout_at(deadline):
                    event = await receive()
            except TimeoutError:
                # Raised inside the route's body read: FastAPI passes HTTPException on to the handlers.
                raise HTTPException(
                    408,
                    detail=f"the body did not arrive within {self.body_timeout_s:g} s (KOMMUNROUTER_BODY_TIMEOUT_S)",
                ) from None
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                complete = not event.get("more_body", False)
                if received > self.max_body_bytes:
                    raise HTTPException(413, detail=message)
            return event

        await self.app(scope, receive_within_limits, send)
