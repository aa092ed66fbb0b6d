"""Run the app with uvicorn, draining on SIGTERM, cutting off clients too slow to send their headers."""

from __future__ import annotations

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from hedged.server.app import create_app
from hedged.server.settings import Settings


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, except that a client must send a request's headers
    within ``header_timeout`` seconds of connecting (or of its previous response).

    uvicorn bounds idle keep-alive connections, but any byte resets that timer: a client
    sending its headers one byte a second (slowloris) held a connection forever. Bodies
    are bounded by the app's read timeout (``ServingMiddleware``).
    """

    header_timeout: float = 30.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a request's headers are complete: its cycle began
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request on this connection: headers in time too

    def connection_lost(self, exc) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.logger.info("%s:%s closed: request headers not received within %g s",
                             *(self.client or ("-", 0)), self.header_timeout)
            self.transport.close()


def protocol_with_header_timeout(seconds: float) -> type:
    """A :class:`GuardedH11Protocol` subclass with this header timeout."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout": float(seconds)})


class DrainingServer(uvicorn.Server):
    """uvicorn's server, except that a request arriving after SIGTERM / Ctrl-C
    gets 503 at once; uvicorn itself stops accepting connections, lets the
    requests in flight finish, then runs the app's shutdown (the queued
    inference jobs finish too)."""

    def handle_exit(self, sig, frame):
        self.config.app.state.draining = True
        super().handle_exit(sig, frame)


def make_server(settings: Settings, app=None) -> DrainingServer:
    """A server for ``settings`` (``app``: default ``create_app(settings)``); call ``.run()``."""
    app = create_app(settings) if app is None else app
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the app logs one line per request itself (logger hedged.access)
        timeout_graceful_shutdown=settings.timeout + 5,
        http=protocol_with_header_timeout(settings.read_timeout),
        # headers above uvicorn's default are refused by h11 with 400 (not held in memory)
    )
    return DrainingServer(config)
