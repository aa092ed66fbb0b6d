"""A server you can expose (issue 25): a real uvicorn server on loopback, real sockets.

Bounded memory per request (a pixel budget read from the headers), abandoned work
dropped, slow clients cut off, clean logs, Host checks and security headers.
"""

from __future__ import annotations

import io
import logging
import socket
import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from hedged import HedgedClassifier  # noqa: E402
from hedged.server import Settings, create_app  # noqa: E402
from test_facade_helpers import cached_bundle, write_images  # noqa: E402
from test_server import free_port, serve_in_thread  # noqa: E402

LOOPBACK = "127.0.0.1"


class Slow:
    """The classifier, each predict call taking ``seconds`` longer; counts the calls that finish."""

    def __init__(self, clf, seconds: float):
        self._clf, self.seconds, self.finished = clf, seconds, 0
        self.started = threading.Event()

    def __getattr__(self, name):
        return getattr(self._clf, name)

    def predict(self, *args, **kwargs):
        self.started.set()
        time.sleep(self.seconds)
        out = self._clf.predict(*args, **kwargs)
        self.finished += 1
        return out


@pytest.fixture(scope="module")
def clf():
    return HedgedClassifier.from_bundle(cached_bundle(leaves=(0, 1)))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("photos"), n=2)


def start(clf, **kw):
    settings = Settings(host=LOOPBACK, port=free_port(), log_level="warning", **kw)
    srv, thread, base = serve_in_thread(settings, create_app(settings, loader=lambda: clf))
    return srv, thread, base


def stop(srv, thread):
    srv.should_exit = True
    thread.join(30)


def metric(base: str, name: str, **labels) -> float:
    text = httpx.get(f"{base}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def raw(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.settimeout(60)
    return s


def test_host_header_security_headers_and_log_escaping(clf, caplog):
    srv, thread, base = start(clf)
    try:
        # a DNS-rebinding page reaches the loopback server under another name: refused
        assert httpx.get(f"{base}/healthz", headers={"host": "evil.example"}).status_code == 400
        for name in ("localhost", LOOPBACK):
            assert httpx.get(f"{base}/healthz", headers={"host": f"{name}:1"}).status_code == 200
        page = httpx.get(f"{base}/")
        for header in ("content-security-policy", "x-content-type-options", "x-frame-options"):
            assert header in page.headers
        assert page.headers["x-frame-options"] == "DENY"
        assert httpx.get(f"{base}/static/app.js").headers["x-content-type-options"] == "nosniff"
        # a path with CR LF cannot forge a second log line
        with caplog.at_level(logging.INFO, logger="hedged.access"):
            httpx.get(f"{base}/nowhere%0D%0A127.0.0.1:1%20%22GET%20/%22%20200")
        lines = [r.getMessage() for r in caplog.records if r.name == "hedged.access"]
        forged = [m for m in lines if "nowhere" in m]
        assert len(forged) == 1 and "\r" not in forged[0] and "\n" not in forged[0] and "\\r\\n" in forged[0]
        # the scrape is not a request in flight
        assert metric(base, "hedged_http_requests_in_flight") == 0
        # the model is named, not the server's path
        assert httpx.get(f"{base}/v1/model").json()["bundle"] == clf.bundle_.path.name
    finally:
        stop(srv, thread)


def trickle(sock, chunk: bytes, rounds: int = 80, pause: float = 0.25):
    """Send ``chunk`` again and again; what the server sends when it answers or closes (b"" = closed)."""
    for _ in range(rounds):
        try:
            sock.sendall(chunk)
        except OSError:
            return b""
        time.sleep(pause)
        if _ready(sock):
            try:
                return sock.recv(4096)
            except OSError:
                return b""
    return None  # still open after rounds x pause seconds


def _ready(sock) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def test_slow_clients_are_cut_off_and_others_served(clf, photos):
    srv, thread, base = start(clf, read_timeout=1.0)
    try:
        # headers one byte at a time (slowloris): the connection is closed, without an answer
        slow = raw(base)
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert trickle(slow, b"X") == b""
        # a body one byte at a time: 408 with one line
        body = raw(base)
        body.sendall(b"POST /v1/predict HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
                     b"content-length: 1000\r\n\r\n{")
        answer = trickle(body, b" ")
        assert answer.startswith(b"HTTP/1.1 408") and b"read timeout of 1 s" in answer
        # meanwhile a normal client is answered
        r = httpx.post(f"{base}/v1/predict", files={"images": (photos[0].name, photos[0].read_bytes())})
        assert r.status_code == 200
    finally:
        stop(srv, thread)


def test_abandoned_requests_are_dropped_and_counted(clf, photos, caplog):
    slow = Slow(clf, seconds=0.4)
    srv, thread, base = start(slow, batch_size=1, queue_size=16)
    files = [("images", (p.name, p.read_bytes())) for p in photos * 4]  # 8 photos: 8 batches of 1
    try:
        with caplog.at_level(logging.INFO):
            def abandon():
                try:
                    httpx.post(f"{base}/v1/predict", files=files, timeout=0.3)
                except httpx.TimeoutException:
                    pass  # the client goes away
            clients = [threading.Thread(target=abandon) for _ in range(5)]
            for c in clients:
                c.start()
            for c in clients:
                c.join()
            # a new client is answered, and none of the abandoned jobs ran to the end
            r = httpx.post(f"{base}/v1/predict", files=files[:1], timeout=60)
            assert r.status_code == 200
        assert slow.finished < 5 * 8 // 2  # each abandoned job stopped after its current batch, or never ran
        cancelled = sum(metric(base, "hedged_requests_cancelled_total", stage=s) for s in ("queued", "running"))
        assert cancelled == 5
        assert metric(base, "hedged_http_requests_total", route="/v1/predict", status="200") == 1
        assert metric(base, "hedged_http_requests_total", route="/v1/predict", status="499") == 5
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        stop(srv, thread)


def test_disconnect_while_uploading_is_one_info_line(clf, caplog):
    srv, thread, base = start(clf)
    try:
        with caplog.at_level(logging.INFO):
            s = raw(base)
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nhost: localhost\r\n"
                      b"content-type: multipart/form-data; boundary=xyz\r\ncontent-length: 100000\r\n\r\n"
                      b"--xyz\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.jpg\"\r\n\r\nabc")
            time.sleep(0.5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()  # reset
            for _ in range(100):
                if metric(base, "hedged_requests_cancelled_total", stage="reading"):
                    break
                time.sleep(0.1)
        assert metric(base, "hedged_requests_cancelled_total", stage="reading") == 1
        assert metric(base, "hedged_http_requests_total", route="/v1/predict", status="500") == 0
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("client went away" in r.getMessage() for r in caplog.records if r.name == "hedged.access")
    finally:
        stop(srv, thread)


def test_pixel_budget_is_checked_from_the_headers(clf):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (2000, 2000), (100, 100, 100)).save(buf, format="PNG")  # 4 MP, a few kB
    png = buf.getvalue()
    srv, thread, base = start(clf, max_request_pixels=10_000_000)
    try:
        r = httpx.post(f"{base}/v1/predict", files=[("images", (f"{i}.png", png)) for i in range(3)])
        assert r.status_code == 413
        assert r.json()["detail"].startswith("the photos of this request decode to 12,000,000 pixels, over the "
                                             "per-request budget of 10,000,000")
        r = httpx.post(f"{base}/v1/predict", files=[("images", (f"{i}.png", png)) for i in range(2)])
        assert r.status_code == 200 and all(x["node"] for x in r.json()["results"])
        # one filename limit for multipart and JSON
        r = httpx.post(f"{base}/v1/predict", files=[("images", ("x" * 300 + ".png", png))])
        assert r.status_code == 422 and "longer than 255" in r.json()["detail"]
    finally:
        stop(srv, thread)
