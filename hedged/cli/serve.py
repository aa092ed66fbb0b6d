"""``hedged serve`` / ``serve.py``: the HTTP API and the web page (FastAPI + uvicorn, one process)."""

from __future__ import annotations

import argparse
import logging

from hedged.cli._common import EXIT_OK, Parser, UsageError, positive_int, run_cli

DESCRIPTION = """\
Serve hedged predictions over HTTP: a JSON API (OpenAPI docs at /docs) and a
page at / where you drop photos and move the accuracy target. It runs the
bundle predict.py would run (--model, else the default bundle).
"""

EPILOG = """\
environment: HEDGED_MODEL, HEDGED_HOST, HEDGED_PORT, HEDGED_MAX_IMAGE_BYTES,
HEDGED_MAX_IMAGES, HEDGED_MAX_REQUEST_BYTES, HEDGED_QUEUE_SIZE, HEDGED_TIMEOUT,
HEDGED_BATCH_SIZE, HEDGED_LOG_LEVEL, HEDGED_MAX_REQUEST_PIXELS, HEDGED_READ_TIMEOUT,
HEDGED_ALLOWED_HOSTS (flags win over them).

endpoints: GET / (the page), /docs (API docs), /healthz, /readyz, /v1/model,
/v1/taxonomy, /metrics; POST /v1/predict, /v1/explain. See docs/serving.md.

SIGTERM or Ctrl-C: requests in flight finish, new ones get 503, then the
process ends by the signal, as uvicorn does (exit status 143 for SIGTERM, 130
for Ctrl-C).

exit status: 2 usage error (bad flag, missing model, port in use), said in one
line before the model loads.
"""


def _check_port(host: str, port: int) -> None:
    """One line now, rather than uvicorn's ERROR lines after the model has loaded."""
    import socket

    if not port:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise UsageError(f"cannot listen on {host}: {err.strerror}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as err:
            raise UsageError(f"cannot listen on {host}:{port}: {err.strerror}") from None


def build_parser() -> Parser:
    p = Parser(prog="hedged serve", description=DESCRIPTION, epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="DIR", default=None, help="model bundle directory (default: the bundled model)")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--max-image-bytes", type=positive_int, default=None, metavar="N", help="per image (default 10 MiB)")
    p.add_argument("--max-images", type=positive_int, default=None, metavar="N", help="per request (default 32)")
    p.add_argument("--max-request-bytes", type=positive_int, default=None, metavar="N", help="per request (default 64 MiB)")
    p.add_argument("--queue-size", type=positive_int, default=None, metavar="N",
                   help="requests that may wait for the model; more get 503 at once (default 8)")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="per request deadline, then 504 (default 30)")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N", help="images per forward pass (default 8)")
    p.add_argument("--log-level", default=None, choices=("debug", "info", "warning", "error"))
    p.add_argument("--max-request-pixels", type=positive_int, default=None, metavar="N",
                   help="decoded pixels one request may hold, read from the image headers (default 400 million)")
    p.add_argument("--read-timeout", type=float, default=None, metavar="S",
                   help="seconds a client may take to send its headers, and its body (default 20)")
    p.add_argument("--allowed-hosts", default=None, metavar="NAMES",
                   help="comma-separated Host names to answer ('*': any; default: the bound address and "
                        "localhost when bound to loopback, any when bound to all interfaces)")
    return p


def main(argv=None) -> int:
    return run_cli(build_parser(), _run, argv)


def _run(args) -> int:
    try:
        from hedged.server.runner import make_server
        from hedged.server.settings import Settings
    except ImportError as err:
        raise UsageError(f"serving needs the serve extra (pip install 'hedged[serve]'): {err}") from None

    try:
        settings = Settings.from_env(
            model=args.model, host=args.host, port=args.port, max_image_bytes=args.max_image_bytes,
            max_images=args.max_images, max_request_bytes=args.max_request_bytes, queue_size=args.queue_size,
            timeout=args.timeout, batch_size=args.batch_size, log_level=args.log_level,
            max_request_pixels=args.max_request_pixels, read_timeout=args.read_timeout,
            allowed_hosts=args.allowed_hosts,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    from hedged.models.bundle import BundleError, resolve_bundle

    try:
        resolve_bundle(settings.model)
    except BundleError as err:
        raise UsageError(str(err)) from None
    _check_port(settings.host, settings.port)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    make_server(settings).run()
    return EXIT_OK


if __name__ == "__main__":  # python -m hedged.cli.serve
    raise SystemExit(main())
