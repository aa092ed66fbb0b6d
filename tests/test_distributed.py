"""torchrun: two CPU processes (gloo) train the full fine-tune like one process with the same global batch.

EfficientNet-Lite0 at 32-48 px on 60 synthetic photos (36 train), 2 epochs of 4 steps of 8 photos.
BatchNorm is ``frozen`` (its forward does not depend on the batch; with ``batch`` each
process would normalise its own 4 photos and the runs would differ by design), dropout,
stochastic depth, MixUp and CutMix are off (each process draws its own masks and mixes
its own photos). What stays different is only the order of floating-point sums (gloo's
all-reduce of the gradients against one backward over 8 photos): the weights agree to
1e-4 after 8 AdamW steps.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from _colours import make_colour_dataset
from hedged.models.finetune import BEST, LAST, load_checkpoint

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")

TOLERANCE = 1e-4  # weights after 8 steps, 2 gloo processes against 1 process (float sum order)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_colour_dataset(tmp_path_factory.mktemp("data"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _argv(dataset, out, *extra):
    return ["-m", "hedged", "train", "--data", str(dataset), "--taxonomy", str(dataset / "tax.yaml"),
            "--out", str(out), "--full-finetune", "--arch", "efficientnet_lite0", "--image-size", "48",
            "--train-size", "32", "--final-epochs", "1", "--epochs", "2", "--batch-size", "8", "--tta", "0",
            "--workers", "0", "--threads", "1", "--mixup", "0", "--cutmix", "0", "--dropout", "0",
            "--drop-path", "0", "--batch-norm", "frozen", "--hierarchy-beta", "2", "--ema-halflife", "0.5",
            "--log-every", "1", "--quiet", *extra]


def _torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--nnodes=1",
            "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _run(cmd, **kw):
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(), check=False, **kw)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _weights(ckpt_dir):
    return load_checkpoint(ckpt_dir / LAST)


@pytest.fixture(scope="module")
def single(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "bundle"
    _run([sys.executable, *_argv(dataset, out)])
    return out


@pytest.fixture(scope="module")
def double(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("double") / "bundle"
    _run([*_torchrun(2), *_argv(dataset, out)])
    return out


def test_two_processes_equal_one_with_the_same_global_batch(single, double):
    a = _weights(single.parent / "bundle.checkpoints")
    b = _weights(double.parent / "bundle.checkpoints")
    assert a["epoch"] == b["epoch"] == 2
    # 2 epochs x 4 global steps of 8 (the training split holds 36 photos); each process took 4 photos a step
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 8
    for part in ("model", "ema"):
        for k, v in a[part].items():
            if v.is_floating_point():
                torch.testing.assert_close(b[part][k], v, rtol=0, atol=TOLERANCE, msg=f"{part}.{k}")
            else:
                assert torch.equal(b[part][k], v), f"{part}.{k}"
    # the training losses the two runs logged agree as well
    for ra, rb in zip(a["history"], b["history"]):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], abs=1e-4)
        assert ra["size"] == rb["size"]


def test_rank_zero_alone_writes_the_bundle_and_log(double):
    ckpt = double.parent / "bundle.checkpoints"
    assert (double / "bundle.json").is_file() and (ckpt / LAST).is_file() and (ckpt / BEST).is_file()
    log = (ckpt / "train.log").read_text().splitlines()
    # one line per step of rank 0 (4 per epoch), not one per process
    assert sum("epoch 1/2 step " in line for line in log) == 4
    assert sum("epoch 2/2 done" in line for line in log) == 1


def test_the_bundles_agree(single, double):
    from hedged.models.bundle import load_bundle

    a, b = load_bundle(single), load_bundle(double)
    assert sorted(p.name for p in single.iterdir()) == sorted(p.name for p in double.iterdir())
    assert a.split == b.split and a.tta_angles == b.tta_angles
    for k, v in a.model.state_dict().items():  # fp16 in the bundle: one rounding step apart at most
        torch.testing.assert_close(b.model.state_dict()[k].float(), v.float(), rtol=1e-3, atol=1e-3, msg=k)


def test_a_resumed_two_process_run_equals_the_uninterrupted_one(dataset, double, tmp_path):
    out = tmp_path / "bundle"
    ckpt = tmp_path / "bundle.checkpoints"
    argv = _argv(dataset, out)
    proc = subprocess.Popen([*_torchrun(2), *argv], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (ckpt / LAST).is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers, mid epoch 2
    proc.wait(timeout=60)
    part = load_checkpoint(ckpt / LAST)
    assert part["epoch"] == 1, "the run was not interrupted during epoch 2"

    _run([*_torchrun(2), *argv, "--resume", str(ckpt / LAST)])
    got = load_checkpoint(ckpt / LAST)
    ref = _weights(double.parent / "bundle.checkpoints")
    assert got["epoch"] == 2 and got["best"] == ref["best"]
    for part_name in ("model", "ema"):
        for k, v in ref[part_name].items():
            torch.testing.assert_close(got[part_name][k], v, rtol=0, atol=0, msg=f"{part_name}.{k}")
    assert "resumed from" in (ckpt / "train.log").read_text()


def test_cpu_sync_batchnorm_and_an_odd_split_are_one_line_errors(dataset, tmp_path):
    for extra, message in ((["--batch-norm", "sync"], "--batch-norm sync needs CUDA"),
                           (["--batch-size", "7"], "must be a multiple of the 2 processes")):
        run = subprocess.run([*_torchrun(2), *_argv(dataset, tmp_path / "x", *extra)], capture_output=True,
                             text=True, timeout=600, env=_env(), check=False)
        assert run.returncode != 0
        errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
        assert errors and all(message in ln for ln in errors), run.stderr[-2000:]
