"""Run the app with uvicorn, draining on SIGTERM."""

from __future__ import annotations

import uvicorn

from hedged.server.app import create_app
from hedged.server.settings import Settings


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
    )
    return DrainingServer(config)
