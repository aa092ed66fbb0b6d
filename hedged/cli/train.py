"""``train.py``: fine-tune a backbone on a labelled image collection and write a model bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hedged.cli._common import positive_int

MIN_IMAGE_SIZE = 32

DESCRIPTION = """\
Fine-tune an ImageNet EfficientNet-Lite on labelled photos and write a model
bundle (weights, taxonomy, preprocessing, TTA angles, temperature, calibration
posteriors, test posteriors, metrics, provenance) for predict.py/evaluate.py.

Data: a CSV (image, label and optional group column; entries are paths relative
to the CSV, also looked up under images/ and with .jpg) or an ImageFolder tree
(one subfolder per label). Labels map to taxonomy leaves through the YAML's
aliases; rows whose label is no leaf (e.g. "Not sure") are dropped and counted.
Whole groups (--group-column, default sender_id/group when present) go to one
of train / validation / calibration / test, keeping each class's share in every
split as far as whole groups allow (--no-stratify: image shares only).

Method (practical on 2 CPU cores): the frozen front of the network runs once
per augmented view and its feature maps are cached; only the last
--train-blocks blocks and the head are trained, with early stopping on
validation NLL; the loss weighs classes by count^-0.5 and photos by the size of
their group^-0.5 (--class-weight-power, --contributor-power). The TTA angle set
and the temperature are then chosen on validation; calibration posteriors come
from the calibration split only.
"""


EPILOG = """\
examples:
  hedged train --out bundles/mine                              the shared clothing photos, defaults
  hedged train --data photos/ --taxonomy my.yaml --out bundles/mine --tta auto
  hedged train --limit 200 --epochs 2 --out /tmp/quick --force  a quick smoke run

warnings (stderr, the run goes on): leaves without training photos, a
validation split too small to choose the temperature and TTA, a temperature
at the end of its search range.

exit status: 0 bundle written; 2 usage error (bad data, taxonomy or arguments;
--out not writable or already holding files without --force, checked before
training starts); 130 interrupted.
"""


def _angles(text: str):
    if text == "auto":
        return "auto"
    try:
        angles = tuple(float(a) for a in text.split(",") if a.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or comma-separated degrees like 0,-15,15, got {text!r}") from None
    if not angles:
        raise argparse.ArgumentTypeError("needs at least one angle")
    return angles


def _image_size(text: str) -> int:
    value = positive_int(text)
    if value < MIN_IMAGE_SIZE:
        # EfficientNet downsamples 32x: below that the last feature map is under one pixel
        raise argparse.ArgumentTypeError(f"must be at least {MIN_IMAGE_SIZE} px, got {value}")
    return value


def _device(text: str) -> str:
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (try cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no CUDA device is available on this machine")
    return text


def _id_file(text: str) -> tuple:
    import json

    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    raw = path.read_text()
    if raw.lstrip().startswith("{"):
        return tuple(str(r["image"]) for r in json.loads(raw)["suspects"])
    return tuple(line.strip() for line in raw.splitlines() if line.strip())


def _optional_size(text: str):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text!r}")
    return value or None


def _fractions(text: str):
    try:
        f = tuple(float(x) for x in text.replace("/", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 4 numbers like 0.6,0.1,0.15,0.15, got {text!r}") from None
    if len(f) != 4 or any(x <= 0 for x in f) or abs(sum(f) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"must be 4 positive numbers summing to 1, got {text!r}")
    return f


def build_parser() -> argparse.ArgumentParser:
    from hedged.cli._common import Parser
    from hedged.models.config import TrainConfig

    d = TrainConfig(data="", taxonomy="", out="")
    p = Parser(prog="hedged train", description=DESCRIPTION, epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None,
                   help="CSV file, folder with images.csv, or ImageFolder root (default: the shared clothing photos, "
                        "../shared/data/clothing beside the repository, wherever you run from)")
    p.add_argument("--taxonomy", default=None,
                   help="taxonomy YAML (default: the repository's taxonomies/clothing.yaml, or the bundled "
                        "model's taxonomy when installed without the repository)")
    p.add_argument("--out", required=True, help="bundle directory to write (checked before training starts)")
    p.add_argument("--force", action="store_true", help="overwrite the files of an existing --out folder")
    p.add_argument("--arch", default=d.arch, choices=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
    p.add_argument("--image-size", type=_image_size, default=d.image_size, help="input side in px (default: %(default)s)")
    p.add_argument("--resize", default=d.resize, choices=["center_crop", "squash", "pad"], help="resize policy (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help="max epochs over the cached views (default: %(default)s)")
    p.add_argument("--train-blocks", type=int, default=d.train_blocks, help="trained tail blocks; the rest is frozen and cached (default: %(default)s)")
    p.add_argument("--aug-views", type=positive_int, default=d.aug_views, help="cached views per training image, the first unaugmented (default: %(default)s)")
    p.add_argument("--tta", type=_angles, default=d.tta, help="TTA angles, e.g. 0,-15,15, or 'auto' = best by validation NLL (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of augmentation and training (default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=d.split_seed, help="seed of the group split (default: %(default)s)")
    p.add_argument("--split", type=_fractions, default=d.fractions, dest="fractions",
                   help="train,validation,calibration,test image shares (default: %s)" % ",".join(f"{x:g}" for x in d.fractions))
    p.add_argument("--heldout-max-size", type=_optional_size, default=d.heldout_max_size,
                   help="contributors with more photos only train; the held-out splits are a seeded random, "
                        "class-balanced sample of the others, so calibration holds many contributors "
                        "(0 = the older largest-first split; default: %(default)s)")
    p.add_argument("--members", nargs="+", default=(), metavar="BUNDLE",
                   help="no training: one network averaging the logits of these trained bundles (same split), "
                        "scored and calibrated like any model; --tta 0 keeps it to one pass per member")
    p.add_argument("--teacher", dest="teacher_bundles", action="append", default=[], metavar="BUNDLE",
                   help="distil: a teacher bundle (repeat for an ensemble) whose calibrated posteriors on the "
                        "training photos become soft targets (cached recipe)")
    p.add_argument("--distill-weight", type=float, default=d.distill_weight,
                   help="weight of the teachers' soft targets against the labels (default: %(default)s)")
    p.add_argument("--suspects", type=_id_file, dest="suspect_ids", default=(), metavar="FILE",
                   help="a file of training photo ids (one per line, or the JSON of label_issues.py) whose labels "
                        "are suspect: their loss weight is multiplied by --suspect-weight (cached recipe)")
    p.add_argument("--suspect-weight", type=float, default=d.suspect_weight,
                   help="weight multiplier of --suspects (default: %(default)s = left out)")
    p.add_argument("--no-duplicate-check", dest="duplicate_check", action="store_false",
                   help="do not look for copies of one photo (by default exact and near-identical copies share "
                        "a split, and copies with different labels are left out)")
    p.add_argument("--keep-conflicts", action="store_true",
                   help="keep copies of one photo that carry different labels (default: left out and reported)")
    p.add_argument("--no-stratify", dest="stratify", action="store_false",
                   help="split by group only, ignoring class shares (default: keep each class in proportion in every split)")
    p.add_argument("--contributor-power", type=float, default=d.contributor_power,
                   help="training sample weight ~ (photos of its group)^-power; 0 = off (default: %(default)s)")
    p.add_argument("--group-column", default=None, help="CSV column whose groups never straddle splits (default: sender_id or group if present)")
    p.add_argument("--image-column", default=d.image_column)
    p.add_argument("--label-column", default=d.label_column)
    p.add_argument("--limit", type=positive_int, default=None, help="use a random subset of this many labelled images (for quick tests)")
    p.add_argument("--cache-dir", default=None, help="keep cached feature maps here to re-train quickly")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--block-lr-scale", type=float, default=d.block_lr_scale, help="lr of the pretrained tail blocks relative to the head (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--class-weight-power", type=float, default=d.class_weight_power, help="class weight ~ count^-power (default: %(default)s)")
    p.add_argument("--mixup", type=float, default=d.mixup, help="Beta(a, a) mixing of cached feature maps; 0 = off (default: %(default)s)")
    p.add_argument("--drop-path", type=float, default=d.drop_path, metavar="P",
                   help="full fine-tune: stochastic depth of the last block, the others in proportion (default: the arch's 0.2)")
    p.add_argument("--batch-norm", choices=("auto", "batch", "frozen", "sync"), default=d.batch_norm,
                   help="full fine-tune: BatchNorm statistics while training: batch (each process's batch), frozen "
                        "(ImageNet's, not updated), sync (SyncBatchNorm across torchrun processes, CUDA only); auto "
                        "(default): sync on CUDA under torchrun, else batch")
    p.add_argument("--dropout", type=float, default=d.dropout, help="dropout before the classifier (default: the arch's)")
    p.add_argument("--patience", type=positive_int, default=d.patience, help="early-stopping patience in epochs (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=d.threads, help="torch threads (default: %(default)s)")
    p.add_argument("--device", type=_device, default=d.device, help="torch device for caching, training and scoring, e.g. cuda (default: %(default)s)")
    p.add_argument("--workers", type=int, default=d.workers, help="image-decoding worker processes (default: %(default)s)")
    g = p.add_argument_group("full fine-tuning (--full-finetune): every block trains on fresh augmentation each epoch")
    g.add_argument("--full-finetune", action="store_true",
                   help="train every block on freshly augmented photos (TrivialAugment, rotations, random erasing, "
                        "MixUp/CutMix), AdamW + warm-up + cosine, layer-wise lr decay, EMA; no feature cache")
    g.add_argument("--init-bundle", default=None, help="start from this bundle's weights (same arch and taxonomy)")
    g.add_argument("--layer-decay", type=float, default=d.layer_decay, help="lr of depth i = lr * decay^(top - i) (default: %(default)s)")
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="linear warm-up length (default: %(default)s)")
    g.add_argument("--train-size", type=positive_int, default=None, help="input side of the early epochs (progressive resolution; default: --image-size)")
    g.add_argument("--final-epochs", type=int, default=d.final_epochs, help="last epochs at --image-size when --train-size is set (default: %(default)s)")
    g.add_argument("--cutmix", type=float, default=d.cutmix, help="Beta(a, a) CutMix; with --mixup each batch picks one (default: %(default)s = off)")
    g.add_argument("--erasing", type=float, default=d.erasing, help="RandomErasing probability (default: %(default)s)")
    g.add_argument("--no-trivial-augment", dest="trivial_augment", action="store_false", help="no TrivialAugmentWide")
    g.add_argument("--ema-halflife", type=float, default=d.ema_halflife, help="EMA half-life in epochs, 0 = off (default: %(default)s)")
    g.add_argument("--hierarchy-beta", type=float, default=None,
                   help="hierarchy-aware soft targets ~ exp(-beta * LCA height) (Bertinetto et al. 2020); default: off")
    g.add_argument("--checkpoint-dir", default=None, help="checkpoint after every epoch here (default: OUT.checkpoints)")
    g.add_argument("--resume", default=None, help="continue from a checkpoint (file or checkpoint directory)")
    g.add_argument("--log-file", default=None,
                   help="append progress and metrics here (default when stdout is not a terminal: CHECKPOINT_DIR/train.log or OUT.log)")
    g.add_argument("--log-every", type=int, default=d.log_every, help="optimiser steps between progress lines (default: %(default)s)")
    p.add_argument("--fp32", action="store_true", help="store fp32 weights (default: fp16, checked to keep accuracy)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def default_paths() -> tuple[Path, Path]:
    """The default data set and taxonomy, found from the package's location, never the working directory."""
    import hedged

    repo = Path(hedged.__file__).resolve().parents[1]
    data = repo.parent / "shared" / "data" / "clothing"
    taxonomy = repo / "taxonomies" / "clothing.yaml"
    if not taxonomy.is_file():
        from hedged.models.bundle import DEFAULT_TORCH_BUNDLE

        taxonomy = DEFAULT_TORCH_BUNDLE / "taxonomy.yaml"
    return data, taxonomy


def main(argv=None) -> int:
    from hedged.cli._common import run_cli

    return run_cli(build_parser(), _run, argv)


def _run(args) -> int:
    from hedged.cli._common import UsageError, check_output_dir
    from hedged.models.extras import MissingExtraError, require_torch

    try:
        require_torch("training", "train")
    except MissingExtraError as err:
        raise UsageError(str(err)) from None
    from hedged.models.data import DatasetError
    from hedged.models.training import TrainConfig, train
    from hedged.taxonomy import TaxonomyError

    data, taxonomy = default_paths()
    if args.data is None:
        if not data.exists():
            raise UsageError(f"no --data given and the default data set is missing ({data})")
        args.data = str(data)
    if args.taxonomy is None:
        args.taxonomy = str(taxonomy)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (args.force or args.resume):
        raise UsageError(f"--out {out} already holds files (a bundle?); pass --force to overwrite it")
    # checked now, not after an hour of training
    check_output_dir(out)
    kw = {k: v for k, v in vars(args).items() if k not in ("fp32", "quiet", "force")}
    if args.resume and not args.full_finetune:
        print("error: --resume needs --full-finetune (the cached recipe keeps its feature cache instead)", file=sys.stderr)
        return 2
    if args.full_finetune and kw["checkpoint_dir"] is None:
        kw["checkpoint_dir"] = args.out.rstrip("/") + ".checkpoints"
    interactive = sys.stdout.isatty()
    if kw["log_file"] is None and not interactive:
        # a background run (nohup, a pipe): keep a log that survives the shell
        kw["log_file"] = (str(Path(kw["checkpoint_dir"]) / "train.log") if kw["checkpoint_dir"]
                          else args.out.rstrip("/") + ".log")
    cfg = TrainConfig(**kw, half=not args.fp32, progress=not args.quiet and interactive)
    import warnings

    def show(message, category, *rest, **kw):  # one plain line as soon as it is raised
        print(f"warning: {message}", file=sys.stderr, flush=True)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", UserWarning)
            warnings.showwarning = show
            result = train(cfg)
    except (DatasetError, TaxonomyError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if "metrics" not in result:  # a torchrun process other than rank 0: rank 0 reports and writes the bundle
        return 0
    val = next(r for r in result["metrics"]["tta_candidates_validation"] if tuple(r["angles"]) == tuple(result["angles"]))
    # validation first: it is what choices between runs may look at; test is for the report
    print(f"validation: top-1 {val['val_accuracy']:.4f}  NLL {val['val_nll']:.4f}  ECE {val['val_ece']:.4f}")
    test = result["metrics"]["test"]["tta"]
    print(f"test: top-1 {test['after_ts']['accuracy']:.4f}  NLL {test['after_ts']['nll']:.4f}  "
          f"ECE {test['after_ts']['ece']:.4f}  (TTA {list(result['angles'])}, T={result['temperature']:.3f})")
    print(f"bundle: {cfg.out}")
    return 0


if __name__ == "__main__":  # python -m hedged.cli.train
    raise SystemExit(main())
