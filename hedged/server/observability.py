"""Metrics, the access log, draining, body read timeouts and security headers, as one ASGI middleware."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

access_log = logging.getLogger("hedged.access")


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hedged_http_requests", "HTTP requests by route and status", ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hedged_http_request_duration_seconds", "Request latency by route", ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.images = Counter(
            "hedged_images", "Images answered, by outcome (classified or error)", ["outcome"],
            registry=self.registry,
        )
        self.explanations = Counter(
            "hedged_explanations", "Photos explained (POST /v1/explain), by outcome (explained or error)", ["outcome"],
            registry=self.registry,
        )
        self.in_flight = Gauge("hedged_http_requests_in_flight", "Requests being handled (the /metrics scrape not "
                               "counted)", registry=self.registry)
        self.cancelled = Counter(
            "hedged_requests_cancelled", "Requests whose client went away before the answer (status 499), by stage "
            "(reading: while sending the body; queued: dropped before it ran; running: stopped between batches)",
            ["stage"], registry=self.registry,
        )
        self.queue_depth = Gauge(
            "hedged_queue_depth", "Inference jobs waiting or running", registry=self.registry
        )
        self.model_load = Gauge(
            "hedged_model_load_seconds", "Seconds the model took to load (NaN until loaded)", registry=self.registry
        )
        self.model_load.set(float("nan"))


async def _send_problem(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The body was not read: the connection cannot carry another request.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# Paths that answer while draining: probes and metrics must see the shutdown.
_ALWAYS = ("/healthz", "/readyz", "/metrics")
#: Status logged and counted for a request whose client went away (nginx's convention).
CLIENT_CLOSED = 499
#: Headers on every response: no sniffing, no framing, no referrer; the page loads only
#: its own files (thumbnails are blob: URLs, heat maps data: URLs).
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
#: The page and its files: nothing but this server's own scripts and styles. (/docs is
#: Swagger UI, which starts from an inline script: it gets the headers above only.)
PAGE_CSP = (b"content-security-policy",
            b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def _is_page(path: str) -> bool:
    return path == "/" or path.startswith("/static/")


class BodyTimeout(Exception):
    """The client took longer than the read timeout to send the request body."""


def printable(text: str) -> str:
    """``text`` with control characters escaped: a logged path cannot forge log lines.

    >>> printable("/v1/x\r\n200 OK")
    '/v1/x\\r\\n200 OK'
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class ServingMiddleware:
    """Per request: refuse when draining (503), else run the app; then record
    metrics and one access-log line.

    A pure ASGI middleware: it never touches the body and adds no task per request.
    The body size cap is FastAPI's own ``max_body_size``.
    """

    def __init__(self, app, state):
        self.app = app
        self.state = state  # app.state: settings, metrics, draining

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = self.state
        metrics: Metrics = state.metrics
        start = time.perf_counter()
        status = {"code": 500, "started": False}
        counted = scope["path"] != "/metrics"  # the scrape is not a request in flight
        read_timeout = float(state.settings.read_timeout)
        body_deadline = time.monotonic() + read_timeout

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
                extra = SECURITY_HEADERS + ([PAGE_CSP] if _is_page(scope["path"]) else [])
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        body = {"done": False}

        async def receive_with_deadline():
            # The whole body must arrive within read_timeout: a client sending one byte a
            # second is cut off instead of holding a connection and a worker forever.
            # Once the body is in, receive() only waits for a disconnect: no deadline.
            if body["done"]:
                return await receive()
            remaining = body_deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.001))
            except asyncio.TimeoutError:
                raise BodyTimeout from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body["done"] = True
            return message

        if counted:
            metrics.in_flight.inc()
        try:
            if state.draining and scope["path"] not in _ALWAYS:
                await _send_problem(send_wrapper, 503, "the server is shutting down")
            else:
                await self.app(scope, receive_with_deadline, send_wrapper)
        except BodyTimeout:
            if not status["started"]:
                await _send_problem(send_wrapper, 408, f"the request body did not arrive within the read timeout "
                                                       f"of {read_timeout:g} s")
        finally:
            if counted:
                metrics.in_flight.dec()
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.requests.labels(scope["method"], route, str(status["code"])).inc()
            metrics.latency.labels(route).observe(elapsed)
            client = scope.get("client") or ("-", 0)
            query = scope.get("query_string", b"").decode("latin-1")
            target = printable(scope["path"] + (f"?{query}" if query else ""))
            if status["code"] == CLIENT_CLOSED:
                access_log.info('%s:%s "%s %s" %d %.1fms client went away', client[0], client[1], scope["method"],
                                target, CLIENT_CLOSED, 1000 * elapsed)
            else:
                access_log.info('%s:%s "%s %s" %d %.1fms', client[0], client[1], scope["method"], target,
                                status["code"], 1000 * elapsed)
