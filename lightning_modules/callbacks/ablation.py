"""Ablations that test what a trained model relies on, and the callback that runs them.

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

import copy
import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.nn import functional as F

from lightning_modules.attribution import attribute, attribution_mode, model_device

DEFAULT_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
CSV_COLUMNS = ("condition", "branch", "method", "fraction", "acc_clip", "acc_segment",
               "deletion_auc", "clips", "segments", "weights")


# ----------------------------------------------------------------------- perturbations
def band_mean(model, branch: str) -> torch.Tensor:
    """The model's per-band training mean of ``branch``: [1, 1, F, 1] (raw units)."""
    return getattr(model, f"{branch}_mean")


def zero_input(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """[B, 1, F, T] -> every cell set to its band's mean (0 after normalisation)."""
    return mean.to(x).expand_as(x).clone()


def gaussian_smooth(x: torch.Tensor, sigma: float | Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of [B, 1, F, T] with ``sigma`` cells (one value, or
    (frequency, time)); kernel radius 3 sigma, edges replicated. ``sigma`` 0: unchanged."""
    sf, st = (float(sigma), float(sigma)) if np.isscalar(sigma) else map(float, sigma)
    out = x
    for axis, s in ((2, sf), (3, st)):
        if s <= 0:
            continue
        r = max(1, int(math.ceil(3 * s)))
        k = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (k / s) ** 2)
        k = (k / k.sum()).view(1, 1, -1, 1) if axis == 2 else (k / k.sum()).view(1, 1, 1, -1)
        pad = (0, 0, r, r) if axis == 2 else (r, r, 0, 0)
        out = F.conv2d(F.pad(out, pad, mode="replicate"), k)
    return out


def shuffle_patches(x: torch.Tensor, patch: Sequence[int],
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Permute the positions of ``patch`` = (bands, frames) tiles of [B, 1, F, T], one
    random permutation per example (never the identity when there are >= 2 tiles). The
    multiset of values is unchanged; cells beyond the last whole tile stay in place."""
    pf, pt = int(patch[0]), int(patch[1])
    b, c, f, t = x.shape
    nf, nt = f // pf, t // pt
    n = nf * nt
    if n < 2:
        raise ValueError(f"shuffle_patches: patch {pf}x{pt} leaves fewer than 2 tiles in a "
                         f"{f}x{t} input; choose callbacks.ablation.patch smaller than the input")
    out = x.clone()
    region = x[..., :nf * pf, :nt * pt].reshape(b, c, nf, pf, nt, pt)
    tiles = region.permute(0, 1, 2, 4, 3, 5).reshape(b, c, n, pf, pt)
    perms = []
    for _ in range(b):
        p = torch.randperm(n, generator=generator)
        if torch.equal(p, torch.arange(n)):
            p = torch.roll(p, 1)
        perms.append(p)
    idx = torch.stack(perms).to(x.device)
    shuffled = torch.gather(tiles, 2, idx.view(b, 1, n, 1, 1).expand_as(tiles))
    back = shuffled.reshape(b, c, nf, nt, pf, pt).permute(0, 1, 2, 4, 3, 5)
    out[..., :nf * pf, :nt * pt] = back.reshape(b, c, nf * pf, nt * pt)
    return out


def deletion_ranks(scores: torch.Tensor | None, shape: Sequence[int],
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Deletion order of the cells of each example: [B, F*T] ranks (0 = deleted first).
    ``scores`` [B, F, T] (higher first; ties in random order) or ``None`` (random order)."""
    b = int(shape[0])
    cells = int(np.prod(shape[1:]))
    tie = torch.rand(b, cells, generator=generator)
    order = torch.argsort(tie, dim=1)  # random order ...
    if scores is not None:
        s = scores.reshape(b, cells).float().cpu()
        # ... then a stable sort by score keeps that random order among equal scores.
        by_score = torch.sort(-torch.gather(s, 1, order), dim=1, stable=True).indices
        order = torch.gather(order, 1, by_score)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(cells).expand(b, cells).contiguous())
    return ranks


def delete_cells(x: torch.Tensor, ranks: torch.Tensor, fraction: float,
                 mean: torch.Tensor) -> torch.Tensor:
    """Replace the ``round(fraction * F * T)`` first-ranked cells of each [1, F, T] example
    by the band mean."""
    b, _, f, t = x.shape
    k = int(round(float(fraction) * f * t))
    if k <= 0:
        return x
    mask = (ranks < k).view(b, 1, f, t).to(x.device)
    return torch.where(mask, mean.to(x).expand_as(x), x)


# ---------------------------------------------------------------------------- scoring
def clip_accuracy(probs: torch.Tensor, labels: torch.Tensor, clips: torch.Tensor) -> float:
    """Accuracy over clips of the mean segment probability ([N, C], [N], [N])."""
    clips = clips.long()
    uniq, inv = torch.unique(clips, return_inverse=True)
    c = probs.shape[1]
    sums = torch.zeros(len(uniq), c, dtype=torch.float64).index_add_(0, inv, probs.double())
    clip_labels = torch.zeros(len(uniq), dtype=torch.long).scatter_(0, inv, labels.long())
    return float((sums.argmax(1) == clip_labels).double().mean())


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


@torch.no_grad()
def _probs(model, names, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return model(**{n: inputs[n] for n in names}).float().softmax(dim=1).cpu()


def run_ablation(model, dataset, smoothing_sigma: float = 2.0, patch: Sequence[int] = (16, 16),
                 deletion_fractions: Sequence[float] = DEFAULT_FRACTIONS,
                 max_segments: int = 2048, batch_size: int = 64, seed: int = 0,
                 weights: str = "current") -> AblationResult:
    """Every condition (module docstring) on up to ``max_segments`` segments of ``dataset``.

    ``dataset``: a ``SegmentDataset``-like object (``clip_pos`` [N] clip of each segment,
    ``labels`` [n_clips], ``__getitems__(indices)`` -> {"mel", "chroma", "label", "clip"}).
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
            batch = dataset.__getitems__(idx[i:i + int(batch_size)])
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


# --------------------------------------------------------------------------- callback
def wandb_loggers(trainer) -> list:
    from pytorch_lightning.loggers import WandbLogger

    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def split_dataset(trainer, split: str, who: str):
    """``trainer.datamodule.datasets[split]`` (set up on demand), or a clear error."""
    dm = getattr(trainer, "datamodule", None)
    if dm is None or not hasattr(dm, "datasets"):
        raise RuntimeError(f"{who} needs trainer.datamodule with .datasets, .clips(split) and "
                           f".labels (a GenreDataModule); fit was called without one")
    if split not in dm.datasets and hasattr(dm, "setup"):
        dm.setup("test" if split == "test" else "fit")
    if split not in dm.datasets:
        raise RuntimeError(f"{who}: split {split!r} is not in the datamodule's datasets "
                           f"({sorted(dm.datasets)}); set it to one of those")
    return dm, dm.datasets[split]


class AblationCallback(pl.Callback):
    """At the end of fitting (rank 0): :func:`run_ablation` on ``split`` with the best
    checkpoint's weights (the first ``ModelCheckpoint``'s ``best_model_path``; else the
    current weights), on a deep copy of the model. Writes ``<run_dir>/ablation.csv`` and
    ``<run_dir>/figures/ablation.png``, logs a ``wandb.Table`` and the figure to every
    ``WandbLogger``, and sets ``self.results`` (flat ``ablation/...`` floats)."""

    def __init__(self, run_dir, split: str = "valid", smoothing_sigma: float = 2.0,
                 patch: Sequence[int] = (16, 16),
                 deletion_fractions: Sequence[float] = DEFAULT_FRACTIONS,
                 max_segments: int = 2048, batch_size: int = 64, seed: int = 0):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.split = str(split)
        self.smoothing_sigma = float(smoothing_sigma)
        self.patch = tuple(int(p) for p in patch)
        self.deletion_fractions = tuple(float(f) for f in deletion_fractions)
        self.max_segments = int(max_segments)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.results: dict[str, float] = {}
        self.csv_path = self.run_dir / "ablation.csv"
        self.figure_path = self.run_dir / "figures" / "ablation.png"

    def _model(self, trainer, pl_module):
        model = copy.deepcopy(pl_module)  # LightningModule.__getstate__ drops the trainer
        weights = "current"
        ckpt_cb = getattr(trainer, "checkpoint_callback", None)
        best = getattr(ckpt_cb, "best_model_path", "") if ckpt_cb is not None else ""
        if best and Path(best).is_file():
            state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
            model.load_state_dict(state)
            weights = f"best ({Path(best).name})"
        return model.eval(), weights

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        from experiments.config import log

        _, ds = split_dataset(trainer, self.split, "AblationCallback")
        model, weights = self._model(trainer, pl_module)
        log(f"ablation: {self.split} split, {weights} weights, up to {self.max_segments} segments")
        res = run_ablation(model, ds, self.smoothing_sigma, self.patch, self.deletion_fractions,
                           self.max_segments, self.batch_size, self.seed, weights)
        del model
        self.results = dict(res.results)
        write_csv(res.rows, self.csv_path)
        from lightning_modules.callbacks.plots import save_ablation_figure

        title = (f"{self.run_dir.name}: {self.split} split, {res.rows[0]['clips']} clips, "
                 f"{weights} weights")
        save_ablation_figure(self.figure_path, res.accuracies, res.curves,
                             chance=1.0 / res.num_classes, title=title)
        for lg in wandb_loggers(trainer):
            data = [[r[c] for c in CSV_COLUMNS] for r in res.rows]
            lg.log_table("ablation/table", columns=list(CSV_COLUMNS), data=data)
            lg.log_image("ablation/figure", [str(self.figure_path)], caption=[title])
            lg.log_metrics(self.results)
        log("ablation: " + ", ".join(f"{k.split('/', 1)[1]} {v:.3f}"
                                     for k, v in self.results.items()))
