#!/usr/bin/env python3
"""Experiment (not the shipped method): end-to-end fine-tuning with on-the-fly augmentation.

Compared against train.py's cached-front method to decide whether training every
block with fresh augmentation each epoch pays on 2 CPU cores. It uses the shipped
bundle's split and reports validation accuracy/NLL per epoch (single view, no
temperature) and the test accuracy at the end.

    python bench/experiments/end_to_end_finetune.py efficientnet_lite0 224 0 8
    # args: arch, input size, first trained block (0 = everything), epochs, [lr]

Result on 2026-11-24 (2-core AMD EPYC, ~85 s per epoch): validation accuracy 0.796
after 8 epochs (the cached-front Lite0 model: 0.801), test 0.709; not adopted.
"""
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from hedged.models.data import load_dataset  # noqa: E402
from hedged.models.registry import create_model, get_spec  # noqa: E402
from hedged.taxonomy import Taxonomy  # noqa: E402

torch.set_num_threads(2)
torch.manual_seed(0)
arch, size, cut, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lr = float(sys.argv[5]) if len(sys.argv) > 5 else 1e-3
data = load_dataset(str(REPO.parent / "shared" / "data" / "clothing"), group_column="sender_id")
tax = Taxonomy.from_yaml(REPO / "taxonomies" / "clothing.yaml")
y = tax.resolve_labels(data.labels, missing="drop")
split = json.loads((REPO / "models" / "bundles" / "clothing" / "split.json").read_text())
idx = {x: i for i, x in enumerate(data.ids)}
S = {k: np.array([idx[i] for i in v]) for k, v in split.items()}
spec = get_spec(arch)
store = int(size * 1.15)
pp_store = spec.preprocess(input_size=store, resize="center_crop", crop_pct=1.0, interpolation="bicubic")
pp = spec.preprocess(input_size=size, resize="center_crop", crop_pct=1.0, interpolation="bicubic")
t = time.time()
def decode(ix):
    return np.stack([pp_store.to_uint8(data.paths[i]) for i in ix])
U = {k: decode(S[k]) for k in ("train", "validation", "test")}
print("decoded", time.time() - t, flush=True)
mean = torch.tensor(pp.mean).view(3, 1, 1) * 255; std = torch.tensor(pp.std).view(3, 1, 1) * 255
aug = T.Compose([T.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True), T.RandomHorizontalFlip(),
                 T.RandomRotation(50, fill=127), T.ColorJitter(0.25, 0.25, 0.25)])
class Tr(Dataset):
    def __len__(s): return len(U["train"])
    def __getitem__(s, i):
        x = torch.from_numpy(U["train"][i]).permute(2, 0, 1)
        return ((aug(x).float() - mean) / std), int(y[S["train"][i]])
def plain(u):
    x = torch.from_numpy(u).permute(0, 3, 1, 2)
    x = T.functional.resize(x, [size, size], antialias=True)
    return ((x.float() - mean) / std).contiguous(memory_format=torch.channels_last)
m = create_model(arch, num_classes=17, weights="imagenet").to(memory_format=torch.channels_last)
for p in m.parameters(): p.requires_grad_(False)
body = [p for b in m._blocks[cut:] for p in b.parameters()] + list(m._conv_head.parameters()) + list(m._bn1.parameters())
if cut == 0: body += list(m._conv_stem.parameters()) + list(m._bn0.parameters())
for p in body + list(m._fc.parameters()): p.requires_grad_(True)
yt = y[S["train"]]
cnt = np.bincount(yt, minlength=17).astype(float); w = cnt ** -0.5; w /= w[yt].mean()
crit = torch.nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32), label_smoothing=0.1)
opt = torch.optim.AdamW([{"params": body, "lr": lr * 0.5}, {"params": m._fc.parameters(), "lr": lr}], weight_decay=0.02)
dl = DataLoader(Tr(), batch_size=32, shuffle=True, num_workers=1, drop_last=True, persistent_workers=True)
total = epochs * len(dl); warm = len(dl) // 2
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
def fwd(x):
    if cut > 0:
        with torch.no_grad():
            h = m.stem(x)
            for b in m._blocks[:cut]: h = b(h)
    else: h = m.stem(x)
    for b in m._blocks[cut:]: h = b(h)
    return m._fc(m._dropout(m.head(h)))
@torch.inference_mode()
def evaluate(k):
    m.eval(); out = []
    for s in range(0, len(U[k]), 64): out.append(fwd(plain(U[k][s:s+64])))
    m.train(); L = torch.cat(out); yy = torch.from_numpy(y[S[k]])
    return float((L.argmax(1) == yy).float().mean()), float(torch.nn.functional.cross_entropy(L, yy)), L
for ep in range(epochs):
    t = time.time(); m.train()
    if cut > 0:
        for b in list(m._blocks[:cut]): b.eval()
    for x, yy in dl:
        loss = crit(fwd(x.contiguous(memory_format=torch.channels_last)), yy)
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    va = evaluate("validation")
    print(f"ep {ep+1} {time.time()-t:.0f}s val acc {va[0]:.4f} nll {va[1]:.4f}", flush=True)
te = evaluate("test"); print("test acc", te[0], "nll", te[1])


