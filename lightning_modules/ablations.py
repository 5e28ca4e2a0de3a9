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

Deletion and insertion curves, against baselines that share the attribution's spatial
structure, are in :mod:`lightning_modules.faithfulness`.

Every clip accuracy comes with a 95 % confidence interval: a percentile bootstrap over the
clips (``scipy.stats.bootstrap``).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from lightning_modules.attribution import attribution_mode, model_device
from lightning_modules.metrics import ClipVoting
from lightning_modules.perturbations import band_mean, gaussian_smooth, shuffle_patches, zero_input

CSV_COLUMNS = ("condition", "branch", "method", "acc_clip", "acc_clip_ci_low",
               "acc_clip_ci_high", "acc_segment", "clips", "segments", "weights")
BOOTSTRAP_RESAMPLES = 1999


def clip_correct(probs: torch.Tensor, labels: torch.Tensor, clips: torch.Tensor) -> np.ndarray:
    """1.0/0.0 per clip seen (in clip order): is the argmax of the clip's mean segment
    probability its label. Local to this process: the ablations run on rank 0 only, so no
    sync across ranks."""
    voting = ClipVoting(probs.shape[1], sync_on_compute=False)
    voting.update(probs, labels, clips)
    res = voting.compute()
    seen = res["labels"] >= 0
    return (res["probs"][seen].argmax(1) == res["labels"][seen]).double().numpy()


def bootstrap_ci(values: np.ndarray, seed: int = 0,
                 n_resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap 95 % CI of the mean of ``values`` (one per clip, or per pair of
    a paired comparison), ``scipy.stats.bootstrap``; a constant sample is its own CI."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    res = stats.bootstrap((values,), np.mean, vectorized=True, n_resamples=int(n_resamples),
                          confidence_level=0.95, method="percentile", random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def clip_accuracy(probs: torch.Tensor, labels: torch.Tensor, clips: torch.Tensor) -> float:
    """Accuracy over clips of the mean segment probability ([N, C], [N], [N]), with the
    same voting as training (:class:`~lightning_modules.metrics.ClipVoting`)."""
    return float(clip_correct(probs, labels, clips).mean())


def segment_accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probs.argmax(1) == labels.long()).double().mean())


def curve_auc(fractions: Sequence[float], accs: Sequence[float]) -> float:
    """Trapezoid area under a curve over fractions, divided by the fraction range."""
    fr = np.asarray(fractions, dtype=float)
    acc = np.asarray(accs, dtype=float)
    if len(fr) < 2 or fr[-1] == fr[0]:
        return float(acc.mean()) if len(acc) else float("nan")
    area = float(np.sum((fr[1:] - fr[:-1]) * (acc[1:] + acc[:-1]) / 2))
    return area / float(fr[-1] - fr[0])


def select_segments(clip_pos: np.ndarray, clip_labels: np.ndarray,
                    max_segments: int | None) -> np.ndarray:
    """Segment indices of whole clips: every segment when ``max_segments`` is None, else
    at most ``max_segments`` (at least one clip): clips
    taken class by class in turn (the first clip of every class, then the second, ...), in
    clip order within a class, skipping a clip that no longer fits. Deterministic."""
    clip_pos = np.asarray(clip_pos)
    if max_segments is None:
        return np.arange(len(clip_pos))
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
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # bars' 95 % CIs
    num_classes: int = 2


def _probs(model, names, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return model.segment_probs({n: inputs[n] for n in names}, batch_size=len(inputs[names[0]]))


def run_ablation(model, dataset, smoothing_sigma: float = 2.0, patch: Sequence[int] = (16, 16),
                 max_segments: int | None = None, batch_size: int = 64, seed: int = 0,
                 weights: str = "current") -> AblationResult:
    """Every condition (module docstring) on every clip of ``dataset``, or on whole clips
    up to ``max_segments`` segments.

    ``dataset``: a ``SegmentDataset``-like object (``clip_pos`` [N] clip of each segment,
    ``labels`` [n_clips], ``batch(indices)`` -> {"mel", "chroma", "label", "clip"}).
    ``model`` is used in eval mode and not modified (copy it first if it is training).
    Returns rows for the CSV, the flat ``results`` dict (``ablation/...``), and what the
    figure draws.
    """
    names = tuple(model.branch_names)
    idx = select_segments(dataset.clip_pos, dataset.labels,
                          None if max_segments is None else int(max_segments))
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
    y, c = torch.cat(labels), torch.cat(clips)
    n_clips = int(torch.unique(c).numel())
    out = AblationResult(num_classes=int(conds["clean"][0].shape[1]))
    acc, correct, ci = {}, {}, {}
    for key, parts in conds.items():
        p = torch.cat(parts)
        acc[key] = (clip_accuracy(p, y, c), segment_accuracy(p, y))
        correct[key] = clip_correct(p, y, c)
        ci[key] = bootstrap_ci(correct[key], seed)

    def r6(v):
        return None if v is None else round(float(v), 6)

    def row(cond, branch=None, method=None):
        return {"condition": cond, "branch": branch, "method": method,
                "acc_clip": r6(acc[cond][0]), "acc_clip_ci_low": r6(ci[cond][0]),
                "acc_clip_ci_high": r6(ci[cond][1]), "acc_segment": r6(acc[cond][1]),
                "clips": n_clips, "segments": len(idx), "weights": weights}

    def bar(key, **kw):
        out.rows.append(row(key, **kw))
        name = "ablation/acc_clip" if key == "clean" else f"ablation/acc_{key}"
        out.results[name] = acc[key][0]
        out.accuracies[key] = acc[key][0]
        out.intervals[key] = ci[key]

    bar("clean")
    for n in names:
        bar(f"{n}_zeroed", branch=n, method="zeroed")
    for key in ("mel_smoothed", "mel_shuffled"):
        if key in acc:
            bar(key, branch="mel", method=key.split("_")[1])
    return out


def write_csv(rows: Sequence[Mapping], path: Path,
              columns: Sequence[str] = CSV_COLUMNS) -> Path:
    """``rows`` under the ``columns`` header; parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)
    return path
