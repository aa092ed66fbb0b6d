"""Full fine-tuning (hedged.models.finetune): targets, schedule, resume, log file.

The end-to-end cases train EfficientNet-Lite0 at 48 px on 60 synthetic photos for
two or three epochs: seconds.
"""

import math
import pickle

import numpy as np
import pytest
import torch

from _colours import make_colour_dataset
from hedged.cli.train import main
from hedged.models.finetune import (
    LAST, lca_heights, load_checkpoint, lr_factor, param_groups, size_for_epoch, soft_cross_entropy,
    soft_target_matrix,
)
from hedged.models.training import TrainConfig, train
from hedged.taxonomy import Taxonomy

pytestmark = pytest.mark.filterwarnings("ignore:.*calibration samples cannot certify")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_colour_dataset(tmp_path_factory.mktemp("data"))


def _cfg(dataset, out, **kw):
    base = dict(data=str(dataset), taxonomy=str(dataset / "tax.yaml"), out=str(out), arch="efficientnet_lite0",
                image_size=48, train_size=32, final_epochs=1, epochs=3, batch_size=8, mixup=0.2, cutmix=1.0,
                hierarchy_beta=2.0, tta=(0.0,), workers=0, threads=1, full_finetune=True, progress=False,
                log=lambda m: None, log_every=1, ema_halflife=0.5)
    base.update(kw)
    return TrainConfig(**base)


# ---------------------------------------------------------------------------
# soft targets


def test_lca_heights_hand_computed():
    t = Taxonomy.from_edges([("things", "warm"), ("warm", "red"), ("warm", "yellow"), ("things", "blue")])
    # red and yellow part at "warm" (height 1), either and blue at the root (height 2)
    assert lca_heights(t).tolist() == [[0, 1, 2], [1, 0, 2], [2, 2, 0]]


def test_lca_height_uses_the_longest_path_below_in_an_uneven_tree():
    # root -> a -> (b -> (x, y), z): the root's height is 3 (root, a, b, x)
    t = Taxonomy.from_edges([("root", "a"), ("a", "b"), ("b", "x"), ("b", "y"), ("a", "z"), ("root", "w")])
    d = lca_heights(t)
    i = {leaf: k for k, leaf in enumerate(t.leaves)}
    assert d[i["x"], i["y"]] == 1
    assert d[i["x"], i["z"]] == 2
    assert d[i["z"], i["w"]] == 3
    np.testing.assert_array_equal(d, d.T)


def test_soft_targets_hand_computed():
    t = Taxonomy.from_edges([("things", "warm"), ("warm", "red"), ("warm", "yellow"), ("things", "blue")])
    q = soft_target_matrix(t, hierarchy_beta=1.0)
    z = 1 + math.exp(-1) + math.exp(-2)
    np.testing.assert_allclose(q[0], [1 / z, math.exp(-1) / z, math.exp(-2) / z], rtol=1e-6)
    np.testing.assert_allclose(q[2], [math.exp(-2) / (1 + 2 * math.exp(-2))] * 2 + [1 / (1 + 2 * math.exp(-2))],
                               rtol=1e-6)
    # label smoothing mixes in the uniform distribution on top
    qs = soft_target_matrix(t, label_smoothing=0.3, hierarchy_beta=1.0)
    np.testing.assert_allclose(qs[0], 0.7 * q[0] + 0.1, rtol=1e-6)
    np.testing.assert_allclose(qs.sum(1), 1.0, rtol=1e-6)
    # a large beta tends to one-hot
    np.testing.assert_allclose(soft_target_matrix(t, hierarchy_beta=50.0), np.eye(3), atol=1e-12)


def test_soft_target_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="taxonomy"):
        soft_target_matrix(n_classes=3, hierarchy_beta=1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        soft_target_matrix(n_classes=3, label_smoothing=1.0)


def test_soft_cross_entropy_matches_torch_label_smoothing():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    q = torch.from_numpy(soft_target_matrix(n_classes=4, label_smoothing=0.1))
    ours = soft_cross_entropy(logits, q[y])
    ref = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
    torch.testing.assert_close(ours, ref)
    # weights: a weighted mean of the per-sample losses
    w = torch.tensor([1.0, 0, 0, 0, 0, 3.0])
    per = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1, reduction="none")
    torch.testing.assert_close(soft_cross_entropy(logits, q[y], w), (per[0] + 3 * per[5]) / 4)


# ---------------------------------------------------------------------------
# schedule


def test_lr_factor_warmup_then_cosine():
    total, warm = 100, 10
    f = [lr_factor(s, total, warm) for s in range(total + 1)]
    np.testing.assert_allclose(f[:10], np.arange(1, 11) / 10)
    assert f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.5)  # half-way through the cosine
    assert f[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(100, total, warm, floor=0.1) == pytest.approx(0.1)
    assert lr_factor(500, total, warm) == pytest.approx(0.0, abs=1e-12)  # past the end stays at the floor


def test_size_for_epoch_progressive():
    assert [size_for_epoch(e, 6, 280, 192, 2) for e in range(6)] == [192] * 4 + [280] * 2
    assert [size_for_epoch(e, 3, 280, None, 1) for e in range(3)] == [280] * 3
    assert [size_for_epoch(e, 2, 280, 192, 5) for e in range(2)] == [280, 280]


def test_param_groups_layer_decay_and_no_decay_on_norms():
    from hedged.models.registry import create_model

    m = create_model("efficientnet_lite0", num_classes=3, weights=None)
    groups = param_groups(m, lr=1.0, layer_decay=0.5, weight_decay=0.05)
    top = len(m._blocks) + 1
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(m._fc.weight)]["lr"] == 1.0
    assert by_param[id(m._conv_stem.weight)]["lr"] == pytest.approx(0.5**top)
    assert by_param[id(m._blocks[2].parameters().__next__())]["lr"] == pytest.approx(0.5 ** (top - 3))
    assert by_param[id(m._fc.bias)]["weight_decay"] == 0.0
    assert by_param[id(m._bn0.weight)]["weight_decay"] == 0.0
    assert by_param[id(m._fc.weight)]["weight_decay"] == 0.05
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


# ---------------------------------------------------------------------------
# training, checkpoints, resume


class _Interrupt(Exception):
    pass


def _interrupt_at(text):
    def log(msg):
        if msg.startswith(text):
            raise _Interrupt(msg)

    return log


def _strip_timing(history):
    return [{k: v for k, v in row.items() if k not in ("seconds", "train_img_per_s")} for row in history]


def test_resume_reproduces_the_uninterrupted_run(dataset, tmp_path):
    full = _cfg(dataset, tmp_path / "a", checkpoint_dir=str(tmp_path / "ca"))
    train(full)
    ref = load_checkpoint(tmp_path / "ca" / LAST)
    assert ref["epoch"] == 3 and [r["epoch"] for r in ref["history"]] == [1, 2, 3]
    assert [r["size"] for r in ref["history"]] == [32, 32, 48]

    # the second run is interrupted at the first step of epoch 2: its checkpoint holds epoch 1
    with pytest.raises(_Interrupt):
        train(_cfg(dataset, tmp_path / "b", checkpoint_dir=str(tmp_path / "cb"), log=_interrupt_at("epoch 2/3 step 1/")))
    part = load_checkpoint(tmp_path / "cb")
    assert part["epoch"] == 1 and len(part["history"]) == 1
    assert part["scheduler"]["last_epoch"] == ref["scheduler"]["last_epoch"] // 3
    seen = []
    train(_cfg(dataset, tmp_path / "b", checkpoint_dir=str(tmp_path / "cb"), resume=str(tmp_path / "cb" / LAST),
               log=seen.append))
    assert any(m.startswith("resumed from") and "1 of 3 epochs done" in m for m in seen)
    assert not any(m.startswith("epoch 1/3") for m in seen)  # epoch 1 is not trained again
    got = load_checkpoint(tmp_path / "cb" / LAST)
    assert got["epoch"] == 3
    assert _strip_timing(got["history"]) == _strip_timing(ref["history"])
    assert got["best"] == ref["best"]
    assert got["scheduler"]["last_epoch"] == ref["scheduler"]["last_epoch"]
    for part_name in ("model", "ema"):
        for k, v in ref[part_name].items():
            torch.testing.assert_close(got[part_name][k], v, rtol=0, atol=0, msg=f"{part_name}.{k}")
    for k, v in ref["optimizer"]["state"].items():
        torch.testing.assert_close(got["optimizer"]["state"][k]["exp_avg"], v["exp_avg"], rtol=0, atol=0)


def test_resume_refuses_a_changed_recipe(dataset, tmp_path):
    with pytest.raises(_Interrupt):
        train(_cfg(dataset, tmp_path / "b", epochs=2, checkpoint_dir=str(tmp_path / "c"),
                   log=_interrupt_at("epoch 2/2 step 1/")))
    with pytest.raises(ValueError, match=r"checkpoint was made with lr=0\.001, this run has lr=0\.002"):
        train(_cfg(dataset, tmp_path / "b", epochs=2, lr=0.002, resume=str(tmp_path / "c")))


class _Payload:
    def __reduce__(self):
        return (print, ("pickle code ran",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_resume_never_unpickles_code(tmp_path, capsys):
    bad = tmp_path / "last.pt"
    bad.write_bytes(pickle.dumps({"format": "hedged-train-checkpoint/1", "x": _Payload()}))
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    assert "pickle code ran" not in capsys.readouterr().out
    with pytest.raises(ValueError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a hedged-train-checkpoint/1"):
        load_checkpoint(tmp_path / "other.pt")


def test_cli_logs_to_a_file_when_stdout_is_no_terminal(dataset, tmp_path, capsys):
    out = tmp_path / "bundle"
    argv = ["--data", str(dataset), "--taxonomy", str(dataset / "tax.yaml"), "--out", str(out), "--full-finetune",
            "--arch", "efficientnet_lite0", "--image-size", "48", "--epochs", "1", "--batch-size", "8", "--tta", "0",
            "--workers", "0", "--threads", "1", "--log-every", "2"]
    assert main(argv) == 0  # pytest's captured stdout is no terminal
    log = (tmp_path / "bundle.checkpoints" / "train.log").read_text()
    lines = log.splitlines()
    assert any("epoch 1/1 step 2/" in line and "img/s" in line for line in lines)
    done = [line for line in lines if "epoch 1/1 done" in line]
    assert len(done) == 1 and "val model top-1" in done[0] and "ema top-1" in done[0]
    assert lines[0][:4].isdigit() and " UTC " in lines[0]  # timestamped
    assert (tmp_path / "bundle.checkpoints" / LAST).is_file()
    # a resumed, finished run trains nothing more and still writes the bundle
    assert main([*argv, "--resume", str(tmp_path / "bundle.checkpoints")]) == 0
    assert "resumed from" in (tmp_path / "bundle.checkpoints" / "train.log").read_text()


def test_cli_resume_errors_are_one_line(dataset, tmp_path, capsys):
    argv = ["--data", str(dataset), "--taxonomy", str(dataset / "tax.yaml"), "--out", str(tmp_path / "b"),
            "--arch", "efficientnet_lite0", "--image-size", "48", "--epochs", "1", "--workers", "0"]
    assert main([*argv, "--resume", str(tmp_path)]) == 2
    assert "needs --full-finetune" in capsys.readouterr().err
    assert main([*argv, "--full-finetune", "--resume", str(tmp_path / "nope.pt")]) == 2
    # the tiny data set also draws the degenerate-split warnings; the error itself is one line
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("warning:")]
    assert len(err) == 1 and err[0].startswith("error: --resume: no checkpoint at")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_full_finetune_on_cuda(dataset, tmp_path):
    train(_cfg(dataset, tmp_path / "g", epochs=1, device="cuda", checkpoint_dir=str(tmp_path / "cg")))
    assert load_checkpoint(tmp_path / "cg")["epoch"] == 1


def test_init_bundle_must_not_have_seen_held_out_photos(dataset, tmp_path, capsys):
    common = ["--data", str(dataset), "--taxonomy", str(dataset / "tax.yaml"), "--arch", "efficientnet_lite0",
              "--image-size", "48", "--epochs", "1", "--batch-size", "8", "--tta", "0", "--workers", "0",
              "--threads", "1", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "cached"), "--aug-views", "1"]) == 0
    seen = []
    # same split: the cached-front bundle is a legitimate starting point
    train(_cfg(dataset, tmp_path / "ft", epochs=1, init_bundle=str(tmp_path / "cached"), log=seen.append,
               checkpoint_dir=str(tmp_path / "c1")))
    assert any(m.startswith("initialised from the bundle") for m in seen)
    # another split seed moves photos the bundle trained on into validation/calibration/test
    assert main([*common, "--out", str(tmp_path / "ft2"), "--full-finetune", "--split-seed", "1",
                 "--init-bundle", str(tmp_path / "cached")]) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("warning:")]
    assert len(err) == 1 and "was trained on" in err[0] and "validation/calibration/test" in err[0]
