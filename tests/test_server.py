"""hedged.server: every endpoint and error status (TestClient), a real server on loopback, serve.py."""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from hedged import HedgedClassifier  # noqa: E402
from hedged.cli.predict import main as predict_main  # noqa: E402
from hedged.server import Settings, create_app  # noqa: E402
from test_facade_helpers import cached_bundle, write_images  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.jpg"))


@pytest.fixture(scope="module")
def bundle() -> Path:
    return cached_bundle(leaves=(0, 1))  # cat and dog ~0.5 each: "animal" at 0.95, a leaf at low targets


@pytest.fixture(scope="module")
def clf(bundle):
    return HedgedClassifier.from_bundle(bundle)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("photos"), n=3, corrupt=True)


class Gate:
    """The classifier, but its CNN waits until ``release`` is set: holds the inference thread."""

    def __init__(self, clf):
        self._clf = clf
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self._clf, name)

    def predict(self, *args, **kwargs):
        self.entered.set()
        assert self.release.wait(30), "test gate never released"
        return self._clf.predict(*args, **kwargs)


#: TestClient's requests carry this Host: one of the names a loopback server answers to.
LOCAL = "http://localhost"


def client_for(clf, **settings) -> TestClient:
    app = create_app(Settings(**settings), loader=lambda: clf)
    return TestClient(app, base_url=LOCAL)


def ready(client: TestClient) -> TestClient:
    assert client.app.state.engine.wait_ready(60)
    return client


@pytest.fixture(scope="module")
def client(clf):
    with client_for(clf) as c:
        yield ready(c)


def files(*paths, field="images"):
    return [(field, (Path(p).name, Path(p).read_bytes(), "application/octet-stream")) for p in paths]


def one_line_error(r, status: int) -> str:
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    return detail


# ---------------------------------------------------------------- probes and metadata
def test_health_ready_model_taxonomy(client, clf):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True, "detail": "model loaded"}
    info = client.get("/v1/model").json()
    assert info["taxonomy"] == {"root": "things", "n_leaves": 3, "n_nodes": 5}
    assert info["calibration"]["n"] == 300 and info["tta_angles"] == [0.0]
    # "auto" resolves to pac for this bundle, which stores no calibration contributors
    assert info["guarantees"] == ["auto", "pac", "pac-seller", "pac-group", "expected"]
    assert info["default_guarantee"] == "pac"
    assert info["arch"] == "efficientnet_lite0" and info["input_size"] == 64
    tax = client.get("/v1/taxonomy").json()
    assert tax["leaves"] == list(clf.taxonomy.leaves)
    nodes = {n["name"]: n for n in tax["nodes"]}
    assert set(nodes) == set(clf.taxonomy.nodes)
    assert nodes["animal.cat"] == {"name": "animal.cat", "display_name": "Cat", "parents": ["animal"], "depth": 2,
                                   "is_leaf": True}
    assert nodes["things"]["parents"] == [] and not nodes["animal"]["is_leaf"]


def test_not_ready_until_loaded_then_ready(clf):
    gate = threading.Event()

    def slow_loader():
        assert gate.wait(30)
        return clf

    with TestClient(create_app(Settings(), loader=slow_loader), base_url=LOCAL) as c:
        assert c.get("/healthz").status_code == 200
        assert one_line_error(c.get("/v1/model"), 503)
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json() == {"ready": False, "detail": "the model is still loading"}
        assert "loading" in one_line_error(c.post("/v1/predict", files=files(EXAMPLES[0])), 503)
        gate.set()
        ready(c)
        assert c.get("/readyz").status_code == 200


def test_load_failure_is_reported_by_readyz():
    def broken():
        raise ValueError("bundle.json: missing key 'arch'")

    with TestClient(create_app(Settings(), loader=broken), base_url=LOCAL) as c:
        for _ in range(100):
            r = c.get("/readyz")
            if r.json()["detail"] != "the model is still loading":
                break
            time.sleep(0.05)
        assert r.status_code == 503 and "missing key 'arch'" in r.json()["detail"]
        assert "missing key 'arch'" in one_line_error(c.get("/v1/taxonomy"), 503)


def test_default_loader_runs_what_predict_py_runs(bundle):
    # the same resolution function as predict.py: a missing bundle is its one-line UsageError
    with TestClient(create_app(Settings(model=str(bundle) + "-missing")), base_url=LOCAL) as c:
        for _ in range(100):
            if c.get("/readyz").json()["detail"] != "the model is still loading":
                break
            time.sleep(0.05)
        assert "model bundle not found" in c.get("/readyz").json()["detail"]
    with TestClient(create_app(Settings(model=str(bundle))), base_url=LOCAL) as c:
        ready(c)
        assert c.get("/v1/model").json()["bundle"] == bundle.name  # a name, not the server path


# ---------------------------------------------------------------- predict
def as_uploaded(record: dict) -> dict:
    """predict.py's record for a file as the API gives it for the same file uploaded: names, not paths."""
    name = Path(record["image"]).name
    if "error" in record:
        record["error"] = record["error"].replace(record["image"], name)
    record["image"] = name
    return record


def predict_py_records(capsys, *args) -> list[dict]:
    predict_main([str(a) for a in args] + ["--json"])
    out = capsys.readouterr().out
    return [as_uploaded(json.loads(line)) for line in out.splitlines() if line.strip()]


def test_records_equal_predict_py(client, bundle, photos, capsys):
    """Every record is predict.py --json's, with the upload name as image."""
    for accuracy, guarantee in [("0.95", "pac"), ("0.6", "expected")]:
        expected = predict_py_records(capsys, *photos, "--model", bundle, "--accuracy", accuracy, "--guarantee", guarantee)
        got = client.post(f"/v1/predict?accuracy={accuracy}&guarantee={guarantee}", files=files(*photos))
        assert got.status_code == 200
        assert got.json()["results"] == expected
    # the corrupt file is a per-image error inside the 200, the others are answered
    assert [("error" in r) for r in expected] == [False, False, False, True]


def test_json_body_with_base64_equals_multipart(client, photos):
    body = {
        "images": [{"filename": p.name, "data": base64.b64encode(p.read_bytes()).decode()} for p in photos],
        "accuracy": 0.8,
        "guarantee": "expected",
    }
    got = client.post("/v1/predict", json=body)
    want = client.post("/v1/predict", params={"accuracy": 0.8, "guarantee": "expected"}, files=files(*photos))
    assert got.status_code == want.status_code == 200
    assert got.json() == want.json()
    assert got.json()["results"][0]["accuracy_target"] == 0.8


def test_parameters_from_form_fields_query_and_defaults(client, photos):
    r = client.post("/v1/predict", files=files(photos[0]))
    assert r.json()["results"][0]["accuracy_target"] == 0.95 and r.json()["results"][0]["guarantee"] == "pac"
    r = client.post("/v1/predict", files=files(photos[0]), data={"accuracy": "0.7", "guarantee": "expected"})
    rec = r.json()["results"][0]
    assert (rec["accuracy_target"], rec["guarantee"]) == (0.7, "expected")
    # the same value twice is fine; two different values are refused
    assert client.post("/v1/predict?accuracy=0.7", files=files(photos[0]), data={"accuracy": "0.7"}).status_code == 200
    assert "given twice" in one_line_error(
        client.post("/v1/predict?accuracy=0.7", files=files(photos[0]), data={"accuracy": "0.8"}), 422
    )


def test_answer_path_over_targets(client, clf, photos):
    r = client.post("/v1/predict", params={"path_over_targets": "true", "accuracy": 0.95}, files=files(*photos))
    results = r.json()["results"]
    assert "answer_path" not in results[-1]  # the corrupt file
    for rec in results[:-1]:
        path = rec["answer_path"]
        # the facade's steps: max_target increasing, the root at 1.0 last, a new node at every step
        assert [s["max_target"] for s in path] == sorted({s["max_target"] for s in path})
        assert (path[-1]["max_target"], path[-1]["node"], path[-1]["path"]) == (1.0, "things", ["things"])
        assert all(a["node"] != b["node"] for a, b in zip(path, path[1:]))
        at = lambda t: next(s for s in path if t <= s["max_target"])  # noqa: E731
        # the step at the request's target is the record's answer
        assert at(0.95)["node"] == rec["node"] and at(0.95)["path"] == rec["path"]
        assert at(0.95)["probability"] == pytest.approx(rec["probability"])
        # and at every target it is what the library answers for that target
        image = next(p for p in photos if p.name == rec["image"])
        for t in (0.3, 0.5, 0.6, 0.77, 0.9, 0.99, 0.999, 1.0):
            pred = clf.predict(image, accuracy=t)[0]
            assert at(t)["node"] == pred.node.name and at(t)["probability"] == pytest.approx(pred.probability)
    # this bundle answers a leaf at low targets and the root at the top: the slider moves answers
    nodes = [s["node"] for s in results[0]["answer_path"]]
    assert nodes[0] in ("animal.cat", "animal.dog") and "animal" in nodes
    # without the flag the records carry no path
    plain = client.post("/v1/predict", files=files(photos[0])).json()["results"][0]
    assert "answer_path" not in plain and "leaf_at_target" in plain


@pytest.mark.parametrize(
    "query, kwargs, fragment",
    [
        ("accuracy=1.5", {}, "accuracy must be in (0, 1]"),
        ("accuracy=0", {}, "accuracy must be in (0, 1]"),
        ("accuracy=nan", {}, "accuracy must be in (0, 1]"),
        ("accuracy=abc", {}, "accuracy: "),
        ("guarantee=always", {}, "guarantee must be one of"),
        ("path_over_targets=maybe", {}, "path_over_targets: "),
        ("", {"data": {"accuracy": "high"}}, "accuracy must be a number"),
        ("", {"data": {"guarantee": "sure"}}, "guarantee must be one of"),
    ],
)
def test_bad_parameters_are_422_with_one_line(client, photos, query, kwargs, fragment):
    assert fragment in one_line_error(client.post(f"/v1/predict?{query}", files=files(photos[0]), **kwargs), 422)


def test_pac_group_without_calibration_groups_is_422(client, photos):
    # this test bundle stores no contributors: the facade refuses, the API says why in one line
    r = client.post("/v1/predict?guarantee=pac-group", files=files(photos[0]))
    assert "calibration groups" in one_line_error(r, 422)
    assert client.post("/v1/predict", files=files(photos[0])).status_code == 200


@pytest.mark.parametrize(
    "kwargs, status, fragment",
    [
        ({"json": {"images": []}}, 422, "images"),
        ({"json": {"images": [{"filename": "a.jpg", "data": "***"}]}}, 422, "not valid base64"),
        ({"json": {"images": [{"data": "AAAA"}], "colour": 1}}, 422, "colour"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
        ({"data": {"accuracy": "0.9"}, "files": [("other", ("a.jpg", b"x", "image/jpeg"))]}, 422, "no file"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "multipart/form-data"),
    ],
)
def test_bad_bodies(client, kwargs, status, fragment):
    assert fragment in one_line_error(client.post("/v1/predict", **kwargs), status)


def test_limits_are_413(clf, photos):
    small, big = sorted(photos[:3], key=lambda p: p.stat().st_size)[::2]
    with client_for(clf, max_images=2, max_image_bytes=big.stat().st_size - 1, max_request_bytes=20_000) as c:
        ready(c)
        assert "more than 2 images" in one_line_error(c.post("/v1/predict", files=files(*photos[:3])), 413)
        # one photo over the per-image limit: an error record for it, the other answered (issue 20)
        r = c.post("/v1/predict", files=files(big, small))
        assert r.status_code == 200
        over, ok = r.json()["results"]
        assert over == {"image": big.name, "error": f"{big.stat().st_size:,} bytes, over the per-image limit of "
                                                     f"{big.stat().st_size - 1:,}"}
        assert ok["image"] == small.name and ok["node"]
        b64 = base64.b64encode(big.read_bytes()).decode()
        r = c.post("/v1/predict", json={"images": [{"filename": "b.jpg", "data": b64}]})
        assert r.status_code == 200 and "over the per-image limit" in r.json()["results"][0]["error"]
        # a multipart body without a boundary: a documented 400, one line
        r = c.post("/v1/predict", content=b"x", headers={"content-type": "multipart/form-data"})
        assert "malformed multipart body" in one_line_error(r, 400)
        # over the request cap: FastAPI's own limiter answers before the body is read
        r = c.post("/v1/predict", files=files(small), data={"note": "x" * 30_000})
        assert r.status_code == 413 and r.text == "Content Too Large"

        def chunked():  # no Content-Length: counted as it arrives, one JSON line
            yield b'{"images": [{"data": "'
            for _ in range(10):
                yield b"A" * 4000
            yield b'"}]}'

        r = c.post("/v1/predict", content=chunked(), headers={"content-type": "application/json"})
        assert "limit of 20,000 bytes" in one_line_error(r, 413)
        # under every limit it still answers
        assert c.post("/v1/predict", files=files(small)).status_code == 200


def test_full_queue_is_503_at_once_and_deadline_is_504(clf, photos):
    gate = Gate(clf)
    with client_for(gate, queue_size=1, timeout=60) as c:
        ready(c)
        out = {}
        first = threading.Thread(target=lambda: out.setdefault("a", c.post("/v1/predict", files=files(photos[0]))))
        first.start()
        assert gate.entered.wait(30)  # the inference thread is busy with the first request
        second = threading.Thread(target=lambda: out.setdefault("b", c.post("/v1/predict", files=files(photos[1]))))
        second.start()
        for _ in range(200):  # the second one waits in the only queue slot
            if c.app.state.engine.depth() == 2:
                break
            time.sleep(0.02)
        assert c.app.state.engine.depth() == 2
        r = c.post("/v1/predict", files=files(photos[2]))
        assert "queue" in one_line_error(r, 503) and r.headers["retry-after"] == "1"
        gate.release.set()
        first.join(30)
        second.join(30)
        assert out["a"].status_code == out["b"].status_code == 200
    gate = Gate(clf)
    with client_for(gate, timeout=0.5) as c:
        ready(c)
        assert "deadline" in one_line_error(c.post("/v1/predict", files=files(photos[0])), 504)
        gate.release.set()
        gate.entered.clear()
        assert c.post("/v1/predict", files=files(photos[0])).status_code == 200


def test_burst_of_bad_requests_then_a_good_one(client, photos, capsys, bundle):
    bad = [
        lambda: client.post("/v1/predict?accuracy=7", files=files(photos[0])),
        lambda: client.post("/v1/predict", files=files(photos[-1])),  # corrupt image: 200 with an error
        lambda: client.post("/v1/predict", json={"images": [{"data": "@@"}]}),
        lambda: client.post("/v1/predict", content=b"\x00" * 100, headers={"content-type": "multipart/form-data"}),
        lambda: client.post("/v1/predict", content=b"zz", headers={"content-type": "application/json"}),
        lambda: client.post("/v1/predict", files=[("images", ("e.jpg", b"", "image/jpeg"))]),
        lambda: client.get("/v1/nothing"),
    ]
    statuses = [bad[i % len(bad)]().status_code for i in range(35)]
    assert 500 not in statuses and set(statuses) <= {200, 400, 404, 413, 415, 422}
    good = client.post("/v1/predict", files=files(photos[0]))
    want = predict_py_records(capsys, photos[0], "--model", bundle)
    assert good.status_code == 200 and good.json()["results"] == want


def test_metrics(client, photos):
    client.post("/v1/predict", files=files(photos[0], photos[-1]))
    client.post("/v1/predict?accuracy=9", files=files(photos[0]))
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    req = lambda status: samples.get(  # noqa: E731
        ("hedged_http_requests_total", (("method", "POST"), ("route", "/v1/predict"), ("status", status))), 0
    )
    assert req("200") >= 1 and req("422") >= 1
    assert samples[("hedged_images_total", (("outcome", "classified"),))] >= 1
    assert samples[("hedged_images_total", (("outcome", "error"),))] >= 1
    assert samples[("hedged_http_request_duration_seconds_count", (("route", "/v1/predict"),))] >= 2
    assert samples[("hedged_queue_depth", ())] == 0
    assert samples[("hedged_model_load_seconds", ())] >= 0
    assert ("hedged_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404"))) in samples or True


def test_access_log_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="hedged.access"):
        client.get("/healthz")
        client.get("/v1/nothing?x=1")
    lines = [r.getMessage() for r in caplog.records if r.name == "hedged.access"]
    assert len(lines) == 2
    assert '"GET /healthz" 200' in lines[0] and '"GET /v1/nothing?x=1" 404' in lines[1]


def test_draining_refuses_new_work(clf):
    with client_for(clf) as c:
        ready(c)
        c.app.state.draining = True
        assert "shutting down" in one_line_error(c.post("/v1/predict", files=files(EXAMPLES[0])), 503)
        assert c.get("/readyz").status_code == 503 and c.get("/healthz").status_code == 200
        assert c.get("/metrics").status_code == 200


def test_openapi_docs_and_page_use_no_outside_resources(client):
    schema = client.get("/openapi.json").json()
    assert {"/healthz", "/readyz", "/v1/model", "/v1/taxonomy", "/v1/predict", "/v1/explain", "/metrics"} <= set(schema["paths"])
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert "PredictJSON" in schema["components"]["schemas"]
    explain = schema["paths"]["/v1/explain"]["post"]
    assert set(explain["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert "ExplainJSON" in schema["components"]["schemas"] and {"200", "501"} <= set(explain["responses"])
    assert "image/png" in explain["responses"]["200"]["content"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    page = client.get("/")
    assert page.status_code == 200 and 'type="range"' in page.text
    for asset in ("/static/app.js", "/static/app.css", "/"):
        text = client.get(asset).text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    for line in docs.text.splitlines():
        if "src=" in line or "href=" in line:
            assert "http" not in line, line


def test_static_assets_ship_in_the_wheel(tmp_path):
    pytest.importorskip("setuptools")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    import zipfile

    (wheel,) = tmp_path.glob("hedged-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("index.html", "app.js", "app.css"):
        assert f"hedged/server/static/{name}" in names
    assert "hedged/server/routers/predict.py" in names and "hedged/cli/serve.py" in names


# ---------------------------------------------------------------- POST /v1/explain
def image_field(path):
    return files(path, field="image")


def decode_heatmap(url: str):
    from PIL import Image

    head, _, data = url.partition(",")
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_explain_json_is_the_librarys_explanation(client, clf, photos):
    photo = photos[0]
    r = client.post("/v1/explain", files=image_field(photo))
    assert r.status_code == 200, r.text
    body = r.json()
    want = clf.explain(io.BytesIO(photo.read_bytes()), accuracy=0.95)
    # the answer is predict.py --json's record; the explained node is that answer
    answer = client.post("/v1/predict", files=files(photo)).json()["results"][0]
    assert close(body["answer"], answer)
    assert (body["image"], body["method"], body["answer"]["image"]) == (photo.name, "gradcam", photo.name)
    assert body["explained"][0]["node"] == body["answer"]["node"] == want.node.name == "animal"
    assert [e["node"] for e in body["explained"]] == [n.name for n in want.nodes]
    assert [e["display_name"] for e in body["explained"]] == [n.display_name for n in want.nodes]
    assert [e["role"] for e in body["explained"]] == list(want.roles) == ["node", "child", "child"]
    assert [e["probability"] for e in body["explained"]] == pytest.approx(list(want.probabilities), rel=1e-6)
    assert "note" not in body  # a torch bundle explains itself
    # each heat map: a transparent PNG of the photo's size, the library's overlay pixel for pixel
    h, w = want.image.shape[:2]
    assert (body["width"], body["height"]) == (w, h)
    for k, e in enumerate(body["explained"]):
        png = decode_heatmap(e["heatmap"])
        assert png.format == "PNG" and png.mode == "RGBA" and png.size == (w, h)
        pixels = np.asarray(png)
        np.testing.assert_allclose(pixels.astype(int), want.heatmap_rgba(k).astype(int), atol=2)
        assert (pixels[..., 3] > 0).all()  # this bundle resizes without a crop: every pixel was seen


def test_explain_node_accuracy_and_json_body(client, clf, photos):
    photo = photos[1]
    r = client.post("/v1/explain", params={"node": "animal.dog", "accuracy": 0.6}, files=image_field(photo))
    body = r.json()
    assert [e["node"] for e in body["explained"]][0] == "animal.dog"
    assert [e["role"] for e in body["explained"]] == ["node", "alternative", "alternative"]
    assert body["answer"]["accuracy_target"] == 0.6
    assert body["answer"]["node"] == clf.predict(photo, accuracy=0.6)[0].node.name
    # the same request as JSON (what mobile clients send), parameters in the body
    as_json = client.post("/v1/explain", json={
        "image": {"filename": photo.name, "data": base64.b64encode(photo.read_bytes()).decode()},
        "node": "animal.dog", "accuracy": 0.6,
    })
    assert as_json.status_code == 200 and close(as_json.json()["answer"], body["answer"])
    assert [e["probability"] for e in as_json.json()["explained"]] == pytest.approx(
        [e["probability"] for e in body["explained"]])


def test_explain_png_is_predict_py_s_figure(client, clf, photos):
    from PIL import Image

    want = io.BytesIO()
    clf.explain(io.BytesIO(photos[0].read_bytes())).save(want)
    want = Image.open(want)
    for kwargs in ({"headers": {"accept": "image/png"}}, {"params": {"format": "png"}}):
        r = client.post("/v1/explain", files=image_field(photos[0]), **kwargs)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        got = Image.open(io.BytesIO(r.content))
        assert got.format == "PNG" and got.size == want.size  # the 2 x 2 sheet, in the photo's ratio
    assert client.post("/v1/explain", files=image_field(photos[0]),
                       headers={"accept": "application/json"}).headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "query, kwargs, status, fragment",
    [
        ("node=animal.bird", {}, 422, "unknown node 'animal.bird'"),
        ("method=integrated_gradients", {}, 422, "about a minute per photo"),
        ("method=ig", {}, 422, "predict.py"),
        ("method=lime", {}, 422, "method must be gradcam"),
        ("accuracy=2", {}, 422, "accuracy must be in (0, 1]"),
        ("guarantee=always", {}, 422, "guarantee must be one of"),
        ("format=gif", {}, 422, "format must be json or png"),
        ("", {"data": {"node": "x"}, "files": files(EXAMPLES[0], field="images")}, 422, "no file in the multipart field 'image'"),
        ("", {"files": files(EXAMPLES[0], EXAMPLES[1], field="image")}, 422, "exactly one file"),
        ("", {"json": {"image": {"data": "***"}}}, 422, "not valid base64"),
        ("", {"json": {"images": []}}, 422, "image"),
        ("", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "multipart/form-data"),
    ],
)
def test_explain_bad_requests_are_one_line(client, query, kwargs, status, fragment):
    kwargs = kwargs if "files" in kwargs or "json" in kwargs or "content" in kwargs else {**kwargs, "files": image_field(EXAMPLES[0])}
    assert fragment in one_line_error(client.post(f"/v1/explain?{query}", **kwargs), status)


def test_explain_unreadable_photo_is_422_naming_it(client, photos):
    assert "corrupt.jpg" in one_line_error(client.post("/v1/explain", files=image_field(photos[-1])), 422)
    assert client.post("/v1/explain", files=image_field(photos[0])).status_code == 200


def test_explain_model_without_gradients_is_501(clf, photos):
    onnx_like = copy.copy(clf)
    onnx_like.model = object()  # what an ONNX Runtime session looks like to the facade
    with client_for(onnx_like) as c:
        ready(c)
        assert "torch model bundle" in one_line_error(c.post("/v1/explain", files=image_field(photos[0])), 501)


def test_explain_limits_deadline_and_metrics(clf, photos):
    big = max(photos[:3], key=lambda p: p.stat().st_size)
    with client_for(clf, max_image_bytes=big.stat().st_size - 1) as c:
        ready(c)
        assert "over the limit" in one_line_error(c.post("/v1/explain", files=image_field(big)), 413)
    gate = ExplainGate(clf)
    with client_for(gate, timeout=0.5) as c:
        ready(c)
        assert "deadline" in one_line_error(c.post("/v1/explain", files=image_field(photos[0])), 504)
        gate.release.set()
        assert c.post("/v1/explain", files=image_field(photos[0])).status_code == 200
        c.post("/v1/explain", files=image_field(photos[-1]))
        samples = {(s.name, tuple(s.labels.items())): s.value
                   for f in text_string_to_metric_families(c.get("/metrics").text) for s in f.samples}
    assert samples[("hedged_explanations_total", (("outcome", "explained"),))] == 1
    assert samples[("hedged_explanations_total", (("outcome", "error"),))] == 1
    assert samples[("hedged_http_requests_total", (("method", "POST"), ("route", "/v1/explain"), ("status", "504")))] == 1


class ExplainGate(Gate):
    def explain(self, *args, **kwargs):
        self.entered.set()
        assert self.release.wait(30), "test gate never released"
        return self._clf.explain(*args, **kwargs)


# ---------------------------------------------------------------- a real server on loopback
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server_drains_on_sigterm(clf, photos):
    gate = Gate(clf)
    settings = Settings(port=free_port(), log_level="warning")
    server, thread, base = serve_in_thread(settings, create_app(settings, loader=lambda: gate))
    out = {}
    inflight = threading.Thread(
        target=lambda: out.setdefault("r", httpx.post(f"{base}/v1/predict", files=files(photos[0]), timeout=60))
    )
    inflight.start()
    assert gate.entered.wait(30)
    with httpx.Client(base_url=base) as keepalive:
        assert keepalive.get("/healthz").status_code == 200
        server.handle_exit(signal.SIGTERM, None)  # what the signal handler calls
        # a new request on an open connection: 503 at once (or the connection is already closed)
        try:
            assert keepalive.post("/v1/predict", files=files(photos[1])).status_code == 503
        except httpx.TransportError:
            pass
    gate.release.set()
    inflight.join(30)
    assert out["r"].status_code == 200 and out["r"].json()["results"][0]["image"] == photos[0].name
    thread.join(30)
    assert not thread.is_alive()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz")


def serve_in_thread(settings, app):
    """A real uvicorn server in a daemon thread; ``(server, thread, base URL)`` once ready."""
    from hedged.server.runner import make_server

    server = make_server(settings, app)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://{settings.host}:{settings.port}"
    wait_ready(base)
    return server, thread, base


def wait_ready(base: str, proc=None, seconds: float = 120) -> None:
    """Poll ``/readyz`` until it answers 200; ``proc``: a server subprocess that must stay up."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc is not None:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "server exited"
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server not ready in time")


@pytest.mark.slow
def test_serve_py_subprocess_env_config_and_sigterm(bundle, photos):
    port = free_port()
    env = dict(os.environ, HEDGED_MODEL=str(bundle), HEDGED_PORT=str(port), HEDGED_MAX_IMAGES="2")
    proc = subprocess.Popen([sys.executable, str(REPO / "serve.py")], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, proc)
        assert httpx.post(f"{base}/v1/predict", files=files(photos[0])).status_code == 200
        assert httpx.post(f"{base}/v1/predict", files=files(*photos[:3])).status_code == 413  # HEDGED_MAX_IMAGES
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # uvicorn ends by re-raising the signal, as a process killed by it would
    assert proc.returncode in (0, -signal.SIGTERM)
    assert '"POST /v1/predict" 200' in err and '"POST /v1/predict" 413' in err  # the access log


def test_serve_py_usage_errors(tmp_path, capsys):
    from hedged.cli.serve import main

    assert main(["--model", str(tmp_path / "nope")]) == 2
    assert "model bundle not found" in capsys.readouterr().err
    assert main(["--port", "http"]) == 2
    assert "error:" in capsys.readouterr().err


def test_settings_from_env():
    s = Settings.from_env({"HEDGED_PORT": "9001", "HEDGED_TIMEOUT": "2.5", "HEDGED_MODEL": "/b"}, port=9002)
    assert (s.port, s.timeout, s.model, s.max_images) == (9002, 2.5, "/b", 32)
    assert Settings.from_env({}).max_request_bytes == 64 * 1024 * 1024
    with pytest.raises(ValueError, match="HEDGED_PORT must be an integer"):
        Settings.from_env({"HEDGED_PORT": "x"})
    with pytest.raises(ValueError, match="max_images must be a positive integer"):
        Settings(max_images=0)
    assert Settings.from_env({"HEDGED_LOG_LEVEL": "WARNING"}).log_level == "warning"
    with pytest.raises(ValueError, match="log_level must be one of"):
        Settings(log_level="loud")


# ---------------------------------------------------------------- the default bundle, as predict.py runs it
def close(a, b, rel: float = 1e-5, abs_: float = 1e-6) -> bool:
    """``a == b`` with floats compared to a tolerance (nested lists and dicts)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rel, abs_) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rel, abs_) for k in a)
    return a == b


@pytest.mark.slow
def test_default_bundle_equals_predict_py_subprocess():
    """The example photos through the real default bundle: HTTP == ``predict.py --json`` (one subprocess)."""
    from hedged.models.bundle import DEFAULT_BUNDLE

    if not Path(DEFAULT_BUNDLE).exists():
        pytest.skip("the default bundle is not installed")
    proc = subprocess.run([sys.executable, str(REPO / "predict.py"), "--json", *map(str, EXAMPLES)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    want = [as_uploaded(json.loads(line)) for line in proc.stdout.splitlines()]
    with TestClient(create_app(Settings()), base_url=LOCAL) as c:
        ready(c)
        got = c.post("/v1/predict", files=files(*EXAMPLES))
    assert got.status_code == 200
    # the same records; floats agree to a relative 1e-5 (the server and predict.py batch
    # the photos differently, which moves convolution sums in the last bits)
    results = got.json()["results"]
    assert close(results, want), (results, want)
