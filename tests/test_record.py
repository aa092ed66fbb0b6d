"""The one answer record (Prediction.to_record) and the server schema that must match it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hedged import HedgedClassifier, Taxonomy
from hedged.results import ERROR_FIELDS, RECORD_FIELDS, Prediction

TAX = Taxonomy.from_edges([("animal", "cat"), ("animal", "dog"), ("root", "animal"), ("root", "car")])


def fitted():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(3, 0.5), size=300)
    y = np.array([rng.choice(3, p=row) for row in p])
    return HedgedClassifier(TAX).fit(p, y), p


def test_record_fields_in_order_and_json_strict():
    clf, p = fitted()
    [pred] = clf.predict_from_probs(p[:1], 0.9, sources=["a.jpg"])
    rec = pred.to_record()
    assert list(rec) == list(RECORD_FIELDS)
    json.dumps(rec, allow_nan=False)
    err = Prediction.failed("b.jpg", "cannot read", 0.9, "pac").to_record()
    assert tuple(err) == ERROR_FIELDS and err == {"image": "b.jpg", "error": "cannot read"}


def test_path_steps_carry_probability_and_path():
    clf, p = fitted()
    [pred] = clf.predict_from_probs(p[:1], 0.9, path_over_targets=True)
    steps = pred.to_record()["answer_path"]
    node_p = TAX.node_probs(p[:1])[0]
    assert steps[-1]["node"] == TAX.root and steps[-1]["max_target"] == 1.0
    for step in steps:
        assert step["probability"] == pytest.approx(node_p[TAX.node_index(step["node"])])
        assert step["path"] == list(clf.node(step["node"]).path)
    # without a path nothing is added
    [plain] = clf.predict_from_probs(p[:1], 0.9)
    assert "answer_path" not in plain.to_record()


def test_nan_becomes_null_and_root_probability_is_at_most_one():
    clf, p = fitted()
    [pred] = clf.predict_from_probs(p[:1], 0.9)
    import dataclasses

    rec = dataclasses.replace(pred, leaf_probability=math.nan).to_record()
    assert rec["leaf_probability"] is None
    json.dumps(rec, allow_nan=False)


def test_server_schema_has_every_record_field():
    schemas = pytest.importorskip("hedged.server.schemas")
    fields = set(schemas.ImageResult.model_fields)
    assert set(RECORD_FIELDS) | set(ERROR_FIELDS) | {"answer_path", "title"} == fields
    step = set(schemas.PathStep.model_fields)
    assert step == {"max_target", "node", "display_name", "probability", "path"}
