"""Check a labelled photo data set before training: broken files, duplicates, leakage, label conflicts.

:func:`check_data` decodes every file once (reduced size) and reports

* files that cannot be read or are truncated, tiny images, non-RGB modes, EXIF rotations;
* exact duplicates (same bytes) and near duplicates (close perceptual hashes confirmed
  by local features: :func:`hedged.models.duplicates.verified_pairs`), grouped, and
  which groups stay within one label, cross labels (**conflicts**), cross
  contributors, and, given a bundle's split, cross splits (**leakage**: a copy of a
  training photo in validation, calibration or test);
* class x split counts, photos per contributor and how concentrated they are.

:func:`write_report` writes ``report.md``, ``report.json`` and contact sheets of the
duplicate groups and the conflicts. ``hedged data check`` is the command line.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

SPLIT_ORDER = ("train", "validation", "calibration", "test")


def check_data(data, split: dict | None = None, progress=None) -> dict:
    """The report of a data set (a CSV, a folder with images.csv, or an ImageFolder tree).

    Parameters
    ----------
    data : str or Path
    split : dict, optional
        Split name -> image ids (a bundle's ``split.json``), to count classes per split and
        find copies across splits.
    progress : callable(stage, done, total), optional
    """
    from hedged.models.data import load_dataset
    from hedged.models.duplicates import TINY, components, inspect_images, verified_pairs

    ds = load_dataset(data)
    step = (lambda stage: (lambda d, t: progress(stage, d, t))) if progress else (lambda stage: None)
    infos = inspect_images(list(ds.paths), progress=step("decoding"))
    pairs, inliers = verified_pairs(infos, progress=step("verifying"))
    ids = np.asarray(ds.ids).astype(str)
    labels = np.asarray(ds.labels).astype(str)
    groups = np.asarray(ds.groups).astype(str) if ds.groups is not None else ids
    where = {}
    if split:
        for name, members in split.items():
            for i in members:
                where[str(i)] = name
                where[Path(str(i)).stem] = name
    split_of = np.array([where.get(i, where.get(Path(i).stem, "")) for i in ids])

    comp = components(len(ids), pairs)
    in_pair = np.unique(pairs) if len(pairs) else np.zeros(0, dtype=np.int64)
    dup_groups = []
    for c in np.unique(comp[in_pair]) if len(in_pair) else []:
        members = np.flatnonzero(comp == c)
        exact = len({infos[i].sha256 for i in members}) == 1
        dup_groups.append({
            "images": [str(ids[i]) for i in members],
            "paths": [str(ds.paths[i]) for i in members],
            "labels": sorted(set(labels[members])),
            "contributors": sorted(set(groups[members])),
            "splits": sorted(set(s for s in split_of[members] if s)),
            "exact": bool(exact),
        })
    for g in dup_groups:
        g["conflict"] = len(g["labels"]) > 1
        g["across_contributors"] = len(g["contributors"]) > 1
        g["leak"] = "train" in g["splits"] and len(g["splits"]) > 1
    errors = [{"image": str(ids[i]), "error": x.error} for i, x in enumerate(infos) if x.error]
    ok = [x for x in infos if not x.error]
    per_contributor = Counter(groups.tolist())
    sizes = np.array(sorted(per_contributor.values(), reverse=True))
    report = {
        "data": str(ds.source),
        "n_images": int(len(ids)),
        "n_contributors": int(len(per_contributor)),
        "unreadable": errors,
        "tiny": [str(ids[i]) for i, x in enumerate(infos) if not x.error and min(x.width, x.height) < TINY],
        "modes": dict(Counter(x.mode for x in ok)),
        "exif_rotated": int(sum(x.exif_rotated for x in ok)),
        "pairs": {"exact": int(np.sum(inliers >= 10_000)), "near": int(np.sum(inliers < 10_000))},
        "duplicate_groups": dup_groups,
        "summary": {
            "groups": len(dup_groups),
            "images_in_groups": int(sum(len(g["images"]) for g in dup_groups)),
            "within_one_label": sum(not g["conflict"] for g in dup_groups),
            "label_conflicts": sum(g["conflict"] for g in dup_groups),
            "across_contributors": sum(g["across_contributors"] for g in dup_groups),
            "across_splits": sum(len(g["splits"]) > 1 for g in dup_groups),
            "train_leaks": sum(g["leak"] for g in dup_groups),
        },
        "labels": dict(Counter(labels.tolist()).most_common()),
        "contributors": {
            "photos_per_contributor_quantiles": {q: float(np.percentile(sizes, q)) for q in (10, 25, 50, 75, 90, 99)},
            "largest": [[k, int(v)] for k, v in per_contributor.most_common(10)],
            "top10_share": float(sizes[:10].sum() / max(1, sizes.sum())),
            "contributors_per_label": {lab: int(len(set(groups[labels == lab]))) for lab in sorted(set(labels))},
        },
    }
    if split:
        table = {}
        for name in SPLIT_ORDER:
            m = split_of == name
            table[name] = dict(Counter(labels[m].tolist()))
        report["class_by_split"] = table
        report["leaks"] = [g for g in dup_groups if g["leak"]]
    return report


def contact_sheet(groups, out: Path, side: int = 128, max_groups: int = 60) -> Path | None:
    """One row per duplicate group: its photos with label, contributor and split under each."""
    from PIL import Image, ImageDraw, ImageOps

    groups = groups[:max_groups]
    if not groups:
        return None
    cols = max(len(g["paths"]) for g in groups)
    cols = min(cols, 6)
    sheet = Image.new("RGB", (cols * side, len(groups) * (side + 28)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, g in enumerate(groups):
        for c, (path, image) in enumerate(list(zip(g["paths"], g["images"]))[:cols]):
            try:
                im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
                im.thumbnail((side, side))
                sheet.paste(im, (c * side + (side - im.width) // 2, r * (side + 28)))
            except Exception:  # noqa: BLE001 - an unreadable photo leaves its cell empty
                pass
            caption = ("exact " if g["exact"] else "near ") + ("CONFLICT" if g["conflict"] else g["labels"][0])
            draw.text((c * side + 2, r * (side + 28) + side + 1), caption[:22], fill="red" if g["conflict"] else "black")
            draw.text((c * side + 2, r * (side + 28) + side + 13), str(image)[:22], fill="gray")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def write_report(report: dict, out_dir) -> dict:
    """``report.json``, ``report.md`` and contact sheets (``duplicates.png``, ``conflicts.png``) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    sheets = {
        "duplicates": contact_sheet(report["duplicate_groups"], out / "duplicates.png"),
        "conflicts": contact_sheet([g for g in report["duplicate_groups"] if g["conflict"]], out / "conflicts.png"),
    }
    s = report["summary"]
    lines = [
        f"# Data check: {report['data']}",
        "",
        f"{report['n_images']:,} photos from {report['n_contributors']:,} contributors.",
        "",
        "## Files",
        "",
        f"- unreadable or truncated: {len(report['unreadable'])}"
        + "".join(f"\n  - `{e['image']}`: {e['error']}" for e in report["unreadable"][:20]),
        f"- tiny (under 32 px on a side): {len(report['tiny'])}",
        f"- modes: {', '.join(f'{k} {v}' for k, v in sorted(report['modes'].items()))}",
        f"- EXIF-rotated (read upright): {report['exif_rotated']}",
        "",
        "## Duplicates",
        "",
        f"{report['pairs']['exact']} exact and {report['pairs']['near']} near-duplicate pairs form {s['groups']} groups "
        f"({s['images_in_groups']} photos): {s['within_one_label']} within one label, **{s['label_conflicts']} with "
        f"conflicting labels**, {s['across_contributors']} across contributors, {s['across_splits']} across splits, "
        f"**{s['train_leaks']} with a copy of a training photo in another split**.",
        "",
    ]
    if sheets["duplicates"]:
        lines += ["![duplicate groups](duplicates.png)", ""]
    if sheets["conflicts"]:
        lines += ["Conflicting labels:", "", "![conflicts](conflicts.png)", ""]
    lines += ["| group | labels | contributors | splits |", "|---|---|---|---|"]
    for g in report["duplicate_groups"][:100]:
        lines.append(f"| {', '.join(g['images'][:3])}{' ...' if len(g['images']) > 3 else ''} | "
                     f"{', '.join(g['labels'])} | {len(g['contributors'])} | {', '.join(g['splits']) or '-'} |")
    c = report["contributors"]
    q = c["photos_per_contributor_quantiles"]
    lines += [
        "",
        "## Contributors",
        "",
        f"Photos per contributor: median {q[50]:g}, 90th percentile {q[90]:g}, largest "
        f"{c['largest'][0][1] if c['largest'] else 0}; the ten largest hold {100 * c['top10_share']:.0f}% of the photos.",
        "",
        "| label | photos | contributors |",
        "|---|---:|---:|",
    ]
    for lab, n in report["labels"].items():
        lines.append(f"| {lab} | {n} | {c['contributors_per_label'].get(lab, 0)} |")
    if "class_by_split" in report:
        names = list(report["class_by_split"])
        lines += ["", "## Classes by split", "", "| label | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for lab in report["labels"]:
            lines.append(f"| {lab} | " + " | ".join(str(report["class_by_split"][n].get(lab, 0)) for n in names) + " |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return {k: str(v) for k, v in sheets.items() if v}
