"""Deletion and insertion curves that can fail: is an attribution better than a baseline
with the same spatial structure?

For every branch, the cells of the branch's input are ranked by a map (highest first, ties
in random order) and, at each fraction f:

- **deletion**: the top f of the cells are replaced by their band mean (the input's "no
  information" value, 0 after the model's normalisation);
- **insertion**: the input starts at its band means and the top f of the cells are put back.

Each clip is scored by the mean over its segments of the probability of the class the model
predicts for the clean clip (the class every map explains), and by whether the clip is still
classified correctly (clip accuracy, as training's voting). A curve's area (trapezoid over
the fractions, divided by their range) is computed per clip; its mean over clips is the AUC,
with a 95 % percentile bootstrap CI over clips. A faithful map makes the deletion AUC low and
the insertion AUC high.

Rankings: the attribution methods (``lightning_modules.attribution.METHODS``; signed maps
rank positive evidence first) and three baselines:

- ``shifted``: each method's own map, cyclically shifted by a random offset along both axes
  (per example): exactly its blobs, sizes and smoothness, at places unrelated to the input.
  The matched baseline: a map beats it only by where it puts its mass.
- ``random_blobs``: a uniform random map drawn at the branch's Grad-CAM layer grid and
  upsampled exactly as Grad-CAM is, so it deletes contiguous blobs of the same size. A smooth
  map can beat scattered random cells for free (a CNN smooths over isolated holes, and one
  contiguous region holds a whole pattern more often than many small ones).
- ``randomised_model``: the Grad-CAM of a copy of the model whose weights are re-initialised
  (normalisation kept): the structure of Grad-CAM without what the model learned.

Every method is compared with every baseline clip by clip (the paired difference of their
AUCs, bootstrap CI over clips): ``beats`` is true when that CI excludes zero in the faithful
direction (deletion below, insertion above).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from lightning_modules.ablations import bootstrap_ci, curve_auc, select_segments
from lightning_modules.attribution import (
    METHODS,
    _to_input_grid,
    attribute,
    attribution_mode,
    layer_grid,
    model_device,
)
from lightning_modules.metrics import ClipVoting
from lightning_modules.perturbations import band_mean, deletion_ranks

FRACTIONS = (0.0, 0.1, 0.25, 0.5, 1.0)
BASELINES = ("shifted", "random_blobs", "randomised_model")
KINDS = ("deletion", "insertion")
# A ranker: (model, inputs {name: [B, 1, F, T]}, target [B], branch) -> scores [B, F, T].
Ranker = Callable[[object, Mapping[str, torch.Tensor], torch.Tensor, str], torch.Tensor]


def random_blobs(model, inputs: Mapping[str, torch.Tensor], branch: str,
                 generator: torch.Generator, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """A uniform random map on ``branch``'s Grad-CAM layer grid (``grid``, or measured with
    a forward pass), upsampled to the input grid as Grad-CAM is (bilinear; circular along
    pitch): [B, F, T]."""
    names = tuple(model.branch_names)
    x = inputs[branch]
    rows, frames = grid or layer_grid(model, branch, inputs)
    native = torch.rand(x.shape[0], 1, rows, frames, generator=generator)
    xs = tuple(inputs[n].detach().cpu().float() for n in names)
    return _to_input_grid(branch, names, xs, native)[:, 0]


def shifted(scores: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """[B, F, T] maps, each rolled by a uniform random offset along both axes."""
    b, f, t = scores.shape
    df = torch.randint(0, f, (b,), generator=generator).tolist()
    dt = torch.randint(0, t, (b,), generator=generator).tolist()
    return torch.stack([torch.roll(m, (i, j), dims=(0, 1)) for m, i, j in zip(scores, df, dt)])


def randomised_copy(model, seed: int = 0):
    """A copy of ``model`` in eval mode with every weight re-initialised (seeded); the
    normalisation buffers are kept, so it reads the inputs as the trained model does."""
    from lightning_modules.sanity import reinitialise

    rand = copy.deepcopy(model).eval()
    reinitialise([m for m in rand.modules() if m is not rand], seed)
    return rand


def _clip_scores(probs: torch.Tensor, labels: torch.Tensor, clips: torch.Tensor,
                 target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per clip (in clip order): the mean probability of ``target`` over its segments, and
    1.0/0.0 for a correct clip-level vote."""
    voting = ClipVoting(probs.shape[1], sync_on_compute=False)
    voting.update(probs, labels, clips)
    res = voting.compute()
    seen = res["labels"] >= 0
    p = res["probs"][seen]
    correct = (p.argmax(1) == res["labels"][seen]).double().numpy()
    ids = torch.nonzero(seen).flatten()
    tgt = torch.zeros(len(seen), dtype=torch.long)
    tgt[clips.long()] = target.long()
    return p.gather(1, tgt[ids].view(-1, 1)).flatten().double().numpy(), correct


@dataclass
class FaithfulnessResult:
    """``scores[(kind, branch, ranking)] = {"prob": [clips, fractions], "acc": [...]}``;
    ``rows`` for ``interpretability.csv``; ``results`` flat floats for the run summary;
    ``verdicts[(kind, branch, method, baseline)]`` True when the method beats it."""

    fractions: tuple[float, ...]
    scores: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    results: dict[str, float] = field(default_factory=dict)
    verdicts: dict = field(default_factory=dict)
    clips: int = 0
    segments: int = 0


def run_faithfulness(model, dataset, methods: Sequence[str] = ("gradcam",),
                     baselines: Sequence[str] = BASELINES, branches: Sequence[str] | None = None,
                     fractions: Sequence[float] = FRACTIONS, max_segments: int | None = None,
                     batch_size: int = 64, seed: int = 0,
                     rankers: Mapping[str, Ranker] | None = None) -> FaithfulnessResult:
    """Deletion and insertion curves (module docstring) on every clip of ``dataset`` (a
    ``SegmentDataset``-like object), or on whole clips up to ``max_segments`` segments.

    ``rankers`` adds rankings by name (e.g. a map under test); they are compared with the
    baselines like the methods. ``model`` is read in eval mode and not modified.
    """
    fractions = tuple(sorted({float(f) for f in fractions}))
    if any(not 0 <= f <= 1 for f in fractions) or len(fractions) < 2:
        raise ValueError(f"fractions must be >= 2 values in [0, 1], got {fractions}")
    bad = [m for m in methods if m not in METHODS]
    unknown = [b for b in baselines if b not in BASELINES]
    if bad or unknown:
        raise ValueError(f"unknown method(s) {bad} / baseline(s) {unknown}; methods: "
                         f"{METHODS}, baselines: {BASELINES}")
    names = tuple(model.branch_names)
    branches = list(names if branches is None else branches)
    rank_fns: dict[str, Ranker] = dict(rankers or {})
    tested = [*methods, *rank_fns]
    gen = torch.Generator().manual_seed(int(seed))
    rand = randomised_copy(model, seed) if "randomised_model" in baselines else None
    idx = select_segments(dataset.clip_pos, dataset.labels,
                          None if max_segments is None else int(max_segments))
    dev = model_device(model)
    bs = int(batch_size)

    def batches():
        for i in range(0, len(idx), bs):
            b = dataset.batch(idx[i:i + bs])
            yield {n: b[n].to(dev, torch.float32) for n in names}, b["label"].cpu(), \
                b["clip"].cpu()

    with attribution_mode(model):
        clean, labels, clips = [], [], []
        for x, y, c in batches():
            clean.append(model.segment_probs(x, bs))
            labels.append(y)
            clips.append(c)
        p0, y, c = torch.cat(clean), torch.cat(labels), torch.cat(clips)
        voting = ClipVoting(p0.shape[1], sync_on_compute=False)
        voting.update(p0, y, c)
        clip_class = voting.compute()["probs"].argmax(1)  # by clip id
        seg_target = clip_class[c.long()]
        probs: dict[tuple, list] = {}
        grids: dict[str, tuple[int, int]] = {}
        start = 0
        for x, _, _ in batches():
            t = seg_target[start:start + len(next(iter(x.values())))]
            start += len(t)
            # Every method's maps of every branch at once (one backward pass per method).
            per_branch = attribute(model, x, target=t.to(dev), methods=methods,
                                   branches=branches, normalize=False).maps if methods else {}
            if rand is not None:
                rand_maps = attribute(rand, x, target=t.to(dev), methods=("gradcam",),
                                      branches=branches, normalize=False).maps
            clean_p = model.segment_probs(x, bs)
            for branch in branches:
                mean = band_mean(model, branch).to(x[branch])
                blank = mean.expand_as(x[branch])
                # Nothing deleted / everything inserted is the clean input; everything
                # deleted / nothing inserted is the band means: the same for every ranking.
                blank_p = model.segment_probs({**x, branch: blank}, bs)
                ends = {("deletion", 0.0): clean_p, ("insertion", 1.0): clean_p,
                        ("deletion", 1.0): blank_p, ("insertion", 0.0): blank_p}
                maps = {m: per_branch[branch][m] for m in methods}
                maps.update({r: fn(model, x, t.to(dev), branch) for r, fn in rank_fns.items()})
                if rand is not None:
                    maps["randomised_model"] = rand_maps[branch]["gradcam"]
                if "shifted" in baselines:
                    maps.update({f"shifted_{r}": shifted(maps[r].cpu(), gen) for r in tested})
                if "random_blobs" in baselines:
                    if branch not in grids:  # every segment has the same shape
                        grids[branch] = layer_grid(model, branch, x)
                    maps["random_blobs"] = random_blobs(model, x, branch, gen, grids[branch])
                for r, scores in maps.items():
                    ranks = deletion_ranks(scores, scores.shape, gen)
                    cells = ranks.shape[1]
                    for f in fractions:
                        k = int(round(f * cells))
                        mask = (ranks < k).view(x[branch].shape).to(x[branch].device)
                        for kind in KINDS:
                            if (kind, f) in ends:
                                probs.setdefault((kind, branch, r, f), []).append(
                                    ends[(kind, f)])
                                continue
                            if kind == "deletion":
                                xb = torch.where(mask, blank, x[branch])
                            else:
                                xb = torch.where(mask, x[branch], blank)
                            probs.setdefault((kind, branch, r, f), []).append(
                                model.segment_probs({**x, branch: xb}, bs))
    out = FaithfulnessResult(fractions=fractions, clips=int(torch.unique(c).numel()),
                             segments=len(idx))
    rankings = tested + [f"shifted_{r}" for r in tested if "shifted" in baselines] + \
        [b for b in BASELINES if b in baselines and b != "shifted"]
    for kind in KINDS:
        for branch in branches:
            for r in rankings:
                per = [_clip_scores(torch.cat(probs[(kind, branch, r, f)]), y, c, seg_target)
                       for f in fractions]
                out.scores[(kind, branch, r)] = {"prob": np.stack([p for p, _ in per], 1),
                                                 "acc": np.stack([a for _, a in per], 1)}
    _summarise(out, tested, rankings, [b for b in BASELINES if b in baselines], branches, seed)
    return out


def _auc_per_clip(fractions, curves: np.ndarray) -> np.ndarray:
    return np.array([curve_auc(fractions, row) for row in curves])


def _summarise(out: FaithfulnessResult, tested, rankings, baselines, branches,
               seed: int) -> None:
    def r6(v):
        return None if v is None or not np.isfinite(v) else round(float(v), 6)

    def add(section, branch, method, x, metric, values):
        lo, hi = bootstrap_ci(values, seed)
        out.rows.append({"section": section, "branch": branch, "method": method, "step": None,
                         "x": x, "metric": metric, "value": r6(np.mean(values)),
                         "ci_low": r6(lo), "ci_high": r6(hi), "n": len(values)})
        return float(np.mean(values)), (lo, hi)

    fr = out.fractions
    for kind in KINDS:
        for branch in branches:
            aucs = {}
            for r in rankings:
                s = out.scores[(kind, branch, r)]
                for j, f in enumerate(fr):
                    add(kind, branch, r, f, "prob", s["prob"][:, j])
                    add(kind, branch, r, f, "acc_clip", s["acc"][:, j])
                for metric, key in (("prob_auc", "prob"), ("acc_clip_auc", "acc")):
                    per_clip = _auc_per_clip(fr, s[key])
                    mean, _ = add(kind, branch, r, None, metric, per_clip)
                    out.results[f"interpretability/{kind}_{metric}_{r}_{branch}"] = mean
                    if key == "prob":
                        aucs[r] = per_clip
            for r in tested:
                for b in baselines:
                    diff = aucs[r] - aucs[f"shifted_{r}" if b == "shifted" else b]
                    mean, (lo, hi) = add(kind, branch, r, None, f"prob_auc_minus_{b}", diff)
                    faithful = hi < 0 if kind == "deletion" else lo > 0
                    out.verdicts[(kind, branch, r, b)] = bool(faithful)
                    out.results[f"interpretability/{kind}_prob_auc_minus_{b}_{r}_{branch}"] = mean
