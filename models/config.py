"""``TrainConfig``: every knob of :func:`hedged.models.training.train`, without importing torch.

Its own module so that ``hedged train --help`` shows the defaults at the cost of
a dataclass, not of torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hedged.models.data import DEFAULT_FRACTIONS, HELDOUT_MAX_SIZE


@dataclass
class TrainConfig:
    """Every knob of :func:`train`; the defaults are what the shipped clothing model used."""

    data: str
    taxonomy: str
    out: str
    # Lite1 at 280 px: the best frozen-feature linear probe on the validation split and
    # in group 5-fold CV of train+validation (docs/model.md, bench/backbone_probe.py)
    arch: str = "efficientnet_lite1"
    image_size: int | None = 280  # None: the architecture's native size
    resize: str = "center_crop"
    crop_pct: float = 1.0  # keep the whole shorter side: garments often reach the photo's edges
    # bicubic: what bench/backbone_probe.py measured with; it also scored 0.7 points above
    # bilinear with the zero-shot ImageNet head (docs/normalisation.md)
    interpolation: str = "bicubic"
    epochs: int = 30
    train_blocks: int = 5
    aug_views: int = 3
    tta: str | tuple = "auto"  # "auto": best of TTA_CANDIDATES by validation NLL
    seed: int = 0
    split_seed: int = 0
    fractions: tuple = DEFAULT_FRACTIONS
    # contributors with more photos only train (None: the old largest-first split of every
    # contributor); the held-out splits are a random class-balanced sample of the others
    heldout_max_size: int | None = HELDOUT_MAX_SIZE
    # copies of one photo (same bytes, or near-identical perceptual hashes) share a split;
    # copies with different labels are left out unless keep_conflicts
    # knowledge distillation (cached recipe): the mean calibrated posteriors of these bundles on
    # the training photos are soft targets, weighted distill_weight against the labels
    # an ensemble of trained bundles (same split, same taxonomy): no training, the members'
    # logits averaged into one network (models/ensemble.py), then scored and calibrated
    members: tuple = ()
    teacher_bundles: tuple = ()
    # training photo ids whose labels are suspect (bench/experiments/label_issues.py): their
    # loss weight is multiplied by suspect_weight (0 = left out); cached recipe
    suspect_ids: tuple = ()
    suspect_weight: float = 0.0
    distill_weight: float = 0.7
    duplicate_check: bool = True
    keep_conflicts: bool = False
    batch_size: int = 64
    lr: float = 1e-3
    block_lr_scale: float = 1.0  # learning rate of the pretrained tail blocks relative to the new head
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    class_weight_power: float = 0.5  # weight_c ~ n_c^-power: 0 none, 1 fully balanced
    mixup: float = 0.0  # Beta(a, a) mixing of cached maps and targets (manifold mixup); 0 = off
    dropout: float | None = None  # before the classifier; None: the architecture's default
    patience: int = 6
    max_rotation: float = 50.0
    limit: int | None = None
    # keep every class in every split in proportion, as far as whole groups allow: the
    # unstratified split put 19 of the 39 Top photos in test and 6 in train
    stratify: bool = True
    # sample weight ~ (photos of its contributor)^-power, 0 = off: 0.5 won on validation NLL
    # (0.555 against 0.586 without; docs/model.md)
    contributor_power: float = 0.5
    cache_dir: str | None = None
    group_column: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    threads: int = 2
    device: str = "cpu"
    workers: int = 1
    half: bool = True
    # --- full fine-tuning (hedged.models.finetune); the fields above that still apply:
    # epochs, batch_size, lr (of the top layer), weight_decay, label_smoothing,
    # class_weight_power, contributor_power, mixup, dropout, patience, max_rotation
    full_finetune: bool = False
    init_bundle: str | None = None  # start from this bundle's weights (same arch and leaves)
    layer_decay: float = 0.85  # lr of depth i = lr * layer_decay^(top - i)
    warmup_epochs: float = 1.0
    train_size: int | None = None  # input side of all but the last final_epochs epochs; None: image_size
    final_epochs: int = 1
    cutmix: float = 0.0  # Beta(a, a) CutMix; with mixup > 0 each batch uses one of the two
    erasing: float = 0.25  # RandomErasing probability
    trivial_augment: bool = True
    ema_halflife: float = 1.0  # epochs; 0 = no EMA
    hierarchy_beta: float | None = None  # soft targets ~ exp(-beta * LCA height); None: one-hot
    drop_path: float | None = None  # stochastic depth of the last block; None: the architecture's (0.2)
    # BatchNorm while training: "batch" (each process's batch statistics), "frozen" (the ImageNet
    # running statistics, not updated: batch-independent, so N processes equal one), "sync"
    # (SyncBatchNorm over the processes; CUDA only), "auto" (sync on CUDA under torchrun, else batch)
    batch_norm: str = "auto"
    checkpoint_dir: str | None = None
    resume: str | None = None
    log_file: str | None = None
    log_every: int = 10  # steps between progress lines
    progress: bool = True
    log: object = field(default=print, repr=False)
