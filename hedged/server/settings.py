"""Server configuration: command-line flags over environment variables over defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

MB = 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error")

#: Environment variable -> Settings field. Values are parsed with the field's type.
ENV = {
    "HEDGED_MODEL": "model",
    "HEDGED_HOST": "host",
    "HEDGED_PORT": "port",
    "HEDGED_MAX_IMAGE_BYTES": "max_image_bytes",
    "HEDGED_MAX_IMAGES": "max_images",
    "HEDGED_MAX_REQUEST_BYTES": "max_request_bytes",
    "HEDGED_QUEUE_SIZE": "queue_size",
    "HEDGED_TIMEOUT": "timeout",
    "HEDGED_BATCH_SIZE": "batch_size",
    "HEDGED_LOG_LEVEL": "log_level",
    "HEDGED_MAX_REQUEST_PIXELS": "max_request_pixels",
    "HEDGED_READ_TIMEOUT": "read_timeout",
    "HEDGED_ALLOWED_HOSTS": "allowed_hosts",
}
#: Host names a server bound to a loopback address answers to (beside the address itself).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


@dataclass(frozen=True)
class Settings:
    """Everything ``create_app`` and ``serve`` need.

    Attributes
    ----------
    model : str or None
        Bundle directory; ``None``: the bundle ``predict.py`` uses by default.
    host, port
        Where ``serve`` listens (loopback by default: exposing it is a choice).
    max_image_bytes, max_images, max_request_bytes
        Upload limits; over them the request gets 413.
    queue_size
        Requests that may wait for the inference thread; one more gets 503 at
        once (back-pressure instead of a growing backlog).
    timeout : float
        Seconds a /v1/predict request may take, queueing included; then 504.
    batch_size : int
        Images per forward pass (as ``predict.py --batch-size``).
    log_level : str
    max_request_pixels : int
        Decoded pixels one request may hold in total, counted from the image
        headers before anything is decoded (JPEGs count at the reduced size they
        are decoded at); over it the request gets 413 naming the budget.
    read_timeout : float
        Seconds a client may take to send a request's headers, and its body; a
        slower client is cut off (408 for the body, the connection closed for headers).
    allowed_hosts : str or None
        Comma-separated ``Host`` header values the server answers to (``*``: any).
        Default: the bound address and the loopback names when bound to loopback
        (a DNS-rebinding page cannot reach it), any when bound to all interfaces.
    """

    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_image_bytes: int = 10 * MB
    max_images: int = 32
    max_request_bytes: int = 64 * MB
    queue_size: int = 8
    timeout: float = 30.0
    batch_size: int = 8
    log_level: str = "info"
    max_request_pixels: int = 400_000_000
    read_timeout: float = 20.0
    allowed_hosts: str | None = None

    def __post_init__(self):
        for name in ("max_image_bytes", "max_images", "max_request_bytes", "queue_size", "batch_size",
                     "max_request_pixels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 <= int(self.port) <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port!r}")
        if not float(self.timeout) > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        if not float(self.read_timeout) > 0:
            raise ValueError(f"read_timeout must be a positive number of seconds, got {self.read_timeout!r}")
        level = str(self.log_level).lower()
        if level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        object.__setattr__(self, "log_level", level)  # uvicorn wants lower case

    def host_names(self) -> list[str]:
        """The ``Host`` values to answer (``["*"]``: any); see ``allowed_hosts``."""
        if self.allowed_hosts:
            return [h.strip() for h in str(self.allowed_hosts).split(",") if h.strip()]
        if self.host in ("0.0.0.0", "::", ""):
            return ["*"]
        return list(dict.fromkeys([self.host, *LOOPBACK_NAMES]))

    @classmethod
    def from_env(cls, environ=None, **overrides) -> Settings:
        """Defaults, then ``HEDGED_*`` variables (see ``ENV``), then ``overrides`` that are not None."""
        environ = os.environ if environ is None else environ
        types = {f.name: f.type for f in fields(cls)}
        values = {}
        for var, name in ENV.items():
            text = environ.get(var)
            if text is None or text == "":
                continue
            kind = {"int": int, "float": float}.get(types[name].split(" ")[0], str)
            try:
                values[name] = kind(text)
            except ValueError:
                raise ValueError(f"{var} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
