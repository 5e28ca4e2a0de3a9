"""Ablations that test what a trained model relies on: conditions, scoring, CSV rows.

Conditions (clip-level accuracy: the mean of segment softmax probabilities per clip, as in
training's voting):

- ``clean``: the inputs as they are;
- ``{branch}_zeroed``: that input replaced by its per-band training mean, i.e. zero *after*
  the model's normalisation (the ``{branch}_mean`` buffer) — "no information", not "silence";
- ``mel_smoothed``: Gaussian blur of the log-Mel (``smoothing_sigma`` cells on both axes,
  edges replicated): removes texture, keeps the coarse shape;
- ``mel_shuffled``: the log-Mel cut into ``patch`` = (bands, frames) patches whose positions
  are permuted (seeded, per segment); every patch keeps its content: the texture stays, the
  layout goes. Cells beyond the last whole patch (e.g. 2 of 130 frames) stay in place;
- ``deletion_{gradcam|random}_{branch}_{fraction}``: the top ``fraction`` of the branch's
  cells, ranked by that segment's Grad-CAM (for the class the model predicts on the clean
  input, upsampled to the branch's grid; zero-attribution ties broken at random) or ranked
  at random (seeded), replaced by the band mean. A faithful attribution makes accuracy fall
  faster than random: its area under the curve (trapezoid over the fractions, divided by the
  fraction range) is lower.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from lightning_modules.attribution import attribute, attribution_mode, model_device
from lightning_modules.metrics import ClipVoting
from lightning_modules.perturbations import (
    band_mean,
    delete_cells,
    deletion_ranks,
    gaussian_smooth,
    shuffle_patches,
    zero_input,
)

DEFAULT_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
CSV_COLUMNS = ("condition", "branch", "method", "fraction", "acc_clip", "acc_segment",
               "deletion_auc", "clips", "segments", "weights")


def clip_accuracy(probs: torch.Tensor, labels: torch.Tensor, clips: torch.Tensor) -> float:
    """Accuracy over clips of the mean segment probability ([N, C], [N], [N]), with the
    same voting as training (:class:`~lightning_modules.metrics.ClipVoting`)."""
    # Local to this process: the ablations run on rank 0 only, so no sync across ranks.
    voting = ClipVoting(probs.shape[1], sync_on_compute=False)
    voting.update(probs, labels, clips)
    return float(voting.compute()["acc"])


def segment_accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probs.argmax(1) == labels.long()).double().mean())


def deletion_auc(fractions: Sequence[float], accs: Sequence[float]) -> float:
    """Trapezoid area under accuracy(fraction), divided by the fraction range."""
    fr = np.asarray(fractions, dtype=float)
    acc = np.asarray(accs, dtype=float)
    if len(fr) < 2 or fr[-1] == fr[0]:
        return float(acc.mean()) if len(acc) else float("nan")
    area = float(np.sum((fr[1:] - fr[:-1]) * (acc[1:] + acc[:-1]) / 2))
    return area / float(fr[-1] - fr[0])


def select_segments(clip_pos: np.ndarray, clip_labels: np.ndarray, max_segments: int) -> np.ndarray:
    """Segment indices of whole clips, at most ``max_segments`` (at least one clip): clips
    taken class by class in turn (the first clip of every class, then the second, ...), in
    clip order within a class, skipping a clip that no longer fits. Deterministic."""
    clip_pos = np.asarray(clip_pos)
    n_clips = len(clip_labels)
    counts = np.bincount(clip_pos, minlength=n_clips)
    labels = np.asarray(clip_labels)
    rank = np.zeros(n_clips, dtype=np.int64)
    seen: dict[int, int] = {}
    for i, y in enumerate(labels.tolist()):
        rank[i] = seen.get(y, 0)
        seen[y] = rank[i] + 1
    order = np.lexsort((labels, rank))  # by rank within class, then by class
    chosen, total = [], 0
    for c in order:
        if counts[c] == 0:
            continue
        if total + counts[c] <= max_segments or not chosen:
            chosen.append(c)
            total += counts[c]
    return np.nonzero(np.isin(clip_pos, np.asarray(chosen)))[0]


# --------------------------------------------------------------------------- running
@dataclass
class AblationResult:
    rows: list[dict] = field(default_factory=list)
    results: dict[str, float] = field(default_factory=dict)
    accuracies: dict[str, float] = field(default_factory=dict)    # bar chart
    curves: dict[str, dict[str, tuple]] = field(default_factory=dict)  # deletion curves
    num_classes: int = 2


def _probs(model, names, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return model.segment_probs({n: inputs[n] for n in names}, batch_size=len(inputs[names[0]]))


def run_ablation(model, dataset, smoothing_sigma: float = 2.0, patch: Sequence[int] = (16, 16),
                 deletion_fractions: Sequence[float] = DEFAULT_FRACTIONS,
                 max_segments: int = 2048, batch_size: int = 64, seed: int = 0,
                 weights: str = "current") -> AblationResult:
    """Every condition (module docstring) on up to ``max_segments`` segments of ``dataset``.

    ``dataset``: a ``SegmentDataset``-like object (``clip_pos`` [N] clip of each segment,
    ``labels`` [n_clips], ``batch(indices)`` -> {"mel", "chroma", "label", "clip"}).
    ``model`` is used in eval mode and not modified (copy it first if it is training).
    Returns rows for the CSV, the flat ``results`` dict (``ablation/...``), and what the
    figure draws.
    """
    names = tuple(model.branch_names)
    fractions = sorted({float(f) for f in deletion_fractions})
    if any(not 0 <= f <= 1 for f in fractions):
        raise ValueError(f"deletion_fractions must lie in [0, 1], got {fractions}")
    idx = select_segments(dataset.clip_pos, dataset.labels, int(max_segments))
    dev = model_device(model)
    gen = torch.Generator().manual_seed(int(seed))
    conds: dict[str, list] = {"clean": []}
    labels, clips = [], []
    with attribution_mode(model):
        for i in range(0, len(idx), int(batch_size)):
            batch = dataset.batch(idx[i:i + int(batch_size)])
            x = {n: batch[n].to(dev, torch.float32) for n in names}
            labels.append(batch["label"].cpu())
            clips.append(batch["clip"].cpu())
            base = _probs(model, names, x)
            conds["clean"].append(base)

            def run(key, **replaced):
                conds.setdefault(key, []).append(_probs(model, names, {**x, **replaced}))

            for n in names:
                run(f"{n}_zeroed", **{n: zero_input(x[n], band_mean(model, n))})
            if "mel" in names:
                run("mel_smoothed", mel=gaussian_smooth(x["mel"], smoothing_sigma))
                run("mel_shuffled", mel=shuffle_patches(x["mel"], patch, gen))
            target = base.argmax(1)
            for n in names:
                cam = attribute(model, x, target=target, methods=("gradcam",), branches=[n],
                                normalize=False).maps[n]["gradcam"]
                ranks = {"gradcam": deletion_ranks(cam, cam.shape, gen),
                         "random": deletion_ranks(None, cam.shape, gen)}
                for method, r in ranks.items():
                    for f in fractions:
                        key = f"deletion_{method}_{n}_{f:g}"
                        if f == 0:
                            conds.setdefault(key, []).append(base)
                        else:
                            run(key, **{n: delete_cells(x[n], r, f, band_mean(model, n))})
    y, c = torch.cat(labels), torch.cat(clips)
    n_clips = int(torch.unique(c).numel())
    out = AblationResult(num_classes=int(conds["clean"][0].shape[1]))
    acc = {}
    for key, parts in conds.items():
        p = torch.cat(parts)
        acc[key] = (clip_accuracy(p, y, c), segment_accuracy(p, y))

    def row(cond, branch=None, method=None, fraction=None, auc=None):
        return {"condition": cond, "branch": branch, "method": method, "fraction": fraction,
                "acc_clip": round(acc[cond][0], 6), "acc_segment": round(acc[cond][1], 6),
                "deletion_auc": auc, "clips": n_clips, "segments": len(idx), "weights": weights}

    out.rows.append(row("clean"))
    out.results["ablation/acc_clip"] = acc["clean"][0]
    out.accuracies["clean"] = acc["clean"][0]
    for n in names:
        key = f"{n}_zeroed"
        out.rows.append(row(key, branch=n, method="zeroed"))
        out.results[f"ablation/acc_{key}"] = acc[key][0]
        out.accuracies[key] = acc[key][0]
    for key in ("mel_smoothed", "mel_shuffled"):
        if key in acc:
            out.rows.append(row(key, branch="mel", method=key.split("_")[1]))
            out.results[f"ablation/acc_{key}"] = acc[key][0]
            out.accuracies[key] = acc[key][0]
    for n in names:
        out.curves[n] = {}
        for method in ("gradcam", "random"):
            keys = [f"deletion_{method}_{n}_{f:g}" for f in fractions]
            curve = [acc[k][0] for k in keys]
            auc = deletion_auc(fractions, curve)
            out.curves[n][method] = (fractions, curve, auc)
            out.results[f"ablation/deletion_auc_{method}_{n}"] = auc
            for f, k in zip(fractions, keys):
                out.rows.append(row(k, branch=n, method=f"deletion_{method}", fraction=f,
                                    auc=round(auc, 6)))
    return out


def write_csv(rows: Sequence[Mapping], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    return path
