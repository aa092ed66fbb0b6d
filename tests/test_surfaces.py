"""One truth on every surface: the same photo gets the same answer from the command line (text and
JSON), the HTTP API, the explanation (JSON and PNG) and the page in a real browser.

Three photos with the bundled model: a polo (an answer), the same polo at a target only the root
meets (not sure), and a chart (not clothing).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")

from hedged import HedgedClassifier  # noqa: E402
from hedged.cli.predict import main as predict_main  # noqa: E402
from hedged.server import Settings, create_app  # noqa: E402
from test_server import free_port, serve_in_thread  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
POLO = REPO / "examples" / "polo.jpg"
CHART = REPO / "tests" / "fixtures" / "not_clothing" / "eval" / "chart-00.jpg"
CASES = [("answer", POLO, 0.8), ("not_sure", POLO, 0.999), ("outside", CHART, 0.95)]
CHROMIUM = Path(os.environ.get("HEDGED_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="module")
def clf():
    return HedgedClassifier.from_bundle()


@pytest.fixture(scope="module")
def server(clf):
    settings = Settings(host="127.0.0.1", port=free_port(), log_level="warning")
    srv, thread, base = serve_in_thread(settings, create_app(settings, loader=lambda: clf))
    yield base
    srv.should_exit = True
    thread.join(30)


def cli(capsys, *argv):
    code = predict_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def without_image(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "image"}


@pytest.mark.slow
@pytest.mark.parametrize("kind, photo, target", CASES, ids=[c[0] for c in CASES])
def test_cli_json_http_and_explanation_agree(capsys, clf, server, kind, photo, target):
    [record] = [json.loads(line) for line in cli(capsys, photo, "--json", "--accuracy", target).splitlines()]
    assert record["kind"] == kind
    headline = record["headline"]
    assert headline == {"answer": "Polo shirt", "not_sure": "not sure beyond Clothing", "outside": "not clothing"}[kind]
    # the readable output says the same words
    text = cli(capsys, photo, "--accuracy", target)
    assert headline in text and "100.0%" not in text
    # the HTTP API: the same record
    with httpx.Client(base_url=server, timeout=300) as http:
        r = http.post("/v1/predict", params={"accuracy": target, "path_over_targets": "true"},
                      files={"images": (photo.name, photo.read_bytes(), "image/jpeg")})
        assert r.status_code == 200, r.text
        [api] = r.json()["results"]
        path = api.pop("answer_path", None)
        assert without_image(api) == without_image(record)
        if kind == "outside":
            assert path is None  # no clothing answer at any target
        else:
            # the page's slider reads the path: at this target, the same node
            step = next(s for s in path if target <= s["max_target"])
            assert step["node"] == record["node"]
        # the explanation answers the same, and explains what that answer needs
        r = http.post("/v1/explain", params={"accuracy": target},
                      files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
        assert r.status_code == 200, r.text
        expl = r.json()
        assert without_image(expl["answer"]) == without_image(record)
        roles = [e["role"] for e in expl["explained"]]
        assert roles == {"answer": ["node", "alternative", "alternative"], "not_sure": ["child"] * 3,
                         "outside": []}[kind]
        r = http.post("/v1/explain", params={"accuracy": target, "format": "png"},
                      files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    # the PNG's title is drawn from the same words
    e = clf.explain(photo, accuracy=target)
    assert headline in e._photo_title() and "100.0%" not in e._photo_title()


def test_explain_format_must_be_json_or_png_wherever_it_is_given(server):
    with httpx.Client(base_url=server, timeout=300) as http:
        for kw in ({"params": {"format": "gif"}}, {"data": {"format": "gif"}}):
            r = http.post("/v1/explain", files={"image": (POLO.name, POLO.read_bytes(), "image/jpeg")}, **kw)
            assert r.status_code == 422 and r.json()["detail"] == "format must be json or png, got 'gif'"
        r = http.get("/favicon.ico")
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no chromium at {CHROMIUM}")
def test_the_page_shows_the_same_words(server):
    playwright_api = pytest.importorskip("playwright.sync_api")
    from test_server_page import drop

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = browser.new_page()
        page.set_default_timeout(120_000)
        page.goto(server + "/")
        drop(page, "#drop", [(POLO.name, POLO.read_bytes(), "image/jpeg"), (CHART.name, CHART.read_bytes(), "image/jpeg")])
        page.wait_for_selector(".card.answered >> nth=1")
        cards = page.locator(".card")

        def answer_of(i):
            return cards.nth(i).locator(".node").inner_text(), cards.nth(i).locator(".prob").inner_text()

        page.locator("#accuracy").fill("0.8")
        assert answer_of(0)[0] == "Polo shirt" and "100.0%" not in answer_of(0)[1]
        assert answer_of(1) == ("not clothing", "")
        assert cards.nth(1).locator(".why-toggle").is_hidden()
        page.locator("#accuracy").fill("0.999")
        assert answer_of(0) == ("Not sure beyond Clothing", "")
        assert cards.nth(0).locator(".crumbs li").count() == 0
        assert answer_of(1) == ("not clothing", "")
        browser.close()
