"""Texture vs shape, read at matched distortion: a severity sweep of three perturbations of
one input branch, every point placed on a common axis of how much the input changed.

Perturbations (on [B, 1, F, T] raw, un-normalised maps):

- ``blur`` removes texture and keeps the coarse shape: a Gaussian blur with ``sigma``
  cells on both axes (:func:`~lightning_modules.perturbations.gaussian_smooth`);
- ``shuffle_time`` removes shape along time and keeps texture *and* the frequency of every
  cell: of the input's whole-height tiles of ``time_tile`` frames, a fraction moves to other
  time positions (:func:`shuffle_patches_time`), so no value changes band;
- ``shuffle_time_freq`` removes shape in both directions: of the ``tile`` x ``tile``
  tiles, a fraction moves in time and frequency (:func:`shuffle_patches_partial`), which
  also carries content to other absolute bands (a confound of the time-only shuffle's
  question).

Why matched severity: one blur (sigma 2) against one 16x16 shuffle says nothing about which
*kind* of information matters, since either can be made as mild or as destructive as one
likes. Here every (perturbation, severity) point gets its **distortion**: the mean squared
change of the input *as the model sees it*, ``((perturbed - clean) / std) ** 2`` averaged
over cells, with the model's per-band ``{branch}_std`` buffer (the ``{branch}_mean`` cancels
in the difference). Clip accuracy (mean segment probability per clip, as training's voting,
95 % bootstrap CI over clips) is then a curve over distortion for each perturbation, with
the clean point at distortion 0, and :func:`texture_vs_shape` compares the curves at the
same distortion: if blurring leaves less accuracy than time shuffling at equal distortion,
the decision rests on texture more than on temporal layout, and the other way round.

How to read the axis: a blur replaces a cell by a local mean, so its distortion grows with
sigma up to about the normalised variance of the fine structure (about 1 for noise-like
content). A moved tile replaces its cells by unrelated ones (about twice the normalised
variance), so a shuffle's severity is the **fraction of tiles moved** at a fixed tile
geometry: :func:`moved_tiles` of the ``n`` tiles (``fraction * n`` to the nearest whole
number, at least 2) are chosen at random and permuted among themselves so that each of
them moves (a derangement); the others stay. Its distortion grows about linearly with the
fraction (about ``2 * fraction`` for noise-like content), so the mild shuffles lie inside
the blur's range and the curves are compared where both are measured.
:func:`texture_vs_shape` reads them inside the distortion range every curve measured; where
the curves do not overlap it falls back to the straight line between the clean point and a
curve's first measured point and says so (``from_clean``).

A shuffle needs at least two tiles (along time, for the time shuffle); a severity whose
tile leaves fewer (e.g. 32-frame tiles in a 24-frame segment), or that moves the same
number of tiles as a smaller fraction on this input, is skipped, logged, and listed in the
result's ``skipped``.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path
from types import MappingProxyType
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from lightning_modules.ablations import bootstrap_ci, clip_correct, select_segments
from lightning_modules.attribution import attribution_mode, model_device
from lightning_modules.perturbations import gaussian_smooth, permute_tiles

log = logging.getLogger(__name__)

PERTURBATIONS = ("blur", "shuffle_time", "shuffle_time_freq")
DEFAULT_SIGMAS = (0.5, 1.0, 2.0, 4.0)
DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)  # of the tiles moved, both shuffles
DEFAULT_TIME_TILE = 8  # time shuffle: whole-height tiles of this many frames
DEFAULT_TILE = 8  # time-frequency shuffle: tiles of this many bands (clipped) x frames
# The keyword arguments of :func:`severity_sweep` that set the severities, at their defaults.
DEFAULT_SEVERITY = MappingProxyType({"sigmas": DEFAULT_SIGMAS, "fractions": DEFAULT_FRACTIONS,
                                     "time_tile": DEFAULT_TIME_TILE, "tile": DEFAULT_TILE})
TEXTURE_SHAPE_COLUMNS = ("branch", "perturbation", "severity", "severity_unit", "distortion",
                         "acc_clip", "acc_clip_ci_low", "acc_clip_ci_high", "prob_true",
                         "clips", "segments")
BRANCH_COLOURS = {"mel": "#3b75af", "chroma": "#e1812c"}
PERTURBATION_STYLES = {"blur": "-", "shuffle_time": "--", "shuffle_time_freq": ":"}
PERTURBATION_TITLES = {"blur": "blur", "shuffle_time": "time shuffle",
                       "shuffle_time_freq": "time-frequency shuffle"}


class SeverityRows(list):
    """The sweep's rows (a ``list`` of dicts with :data:`TEXTURE_SHAPE_COLUMNS`) and
    ``skipped``: one dict per severity left out (``branch``, ``perturbation``,
    ``severity``, ``reason``)."""

    def __init__(self, rows: Sequence[dict] = (), skipped: Sequence[dict] = ()):
        super().__init__(rows)
        self.skipped: list[dict] = list(skipped)


# ----------------------------------------------------------------------- perturbations
def moved_tiles(n: int, fraction: float) -> int:
    """How many of ``n`` tiles a shuffle of ``fraction`` moves: ``fraction * n`` to the
    nearest whole number (halves up), at least 2 (one tile cannot move alone) and at most
    ``n``; 0 when ``n`` < 2."""
    fraction = float(fraction)
    if not 0 < fraction <= 1:
        raise ValueError(f"shuffle fractions must be in (0, 1], got {fraction}")
    if int(n) < 2:
        return 0
    return int(min(int(n), max(2, np.floor(fraction * int(n) + 0.5))))


def partial_permutation(n: int, fraction: float,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """[n] source index of each of ``n`` positions: :func:`moved_tiles` of them, chosen at
    random, permuted among themselves with no fixed point (a uniform derangement), the
    others their own index."""
    k = moved_tiles(n, fraction)
    if k < 2:
        raise ValueError(f"partial_permutation: {n} tile(s) cannot be shuffled")
    chosen = torch.randperm(int(n), generator=generator)[:k]
    while True:  # rejection: about e draws for a uniform derangement of the chosen ones
        p = torch.randperm(k, generator=generator)
        if not torch.any(p == torch.arange(k)):
            break
    idx = torch.arange(int(n))
    idx[chosen] = chosen[p]
    return idx


def shuffle_patches_time(x: torch.Tensor, patch: Sequence[int],
                         generator: torch.Generator | None = None,
                         fraction: float = 1.0) -> torch.Tensor:
    """Move ``patch`` = (bands, frames) tiles of [B, 1, F, T] along time only: in each row of
    tiles (the same bands), :func:`moved_tiles` of the row's tiles (``fraction``; 1: all)
    are permuted among themselves so that each of them moves (:func:`partial_permutation`),
    one draw per example and tile row; the other tiles stay, so every cell keeps its band.
    Bands below the last whole tile row and frames past the last whole tile stay in place.
    ``patch[0]`` = F: whole-height tiles, a permutation of time blocks."""
    pf, pt = int(patch[0]), int(patch[1])
    b, c, f, t = x.shape
    nf, nt = f // pf, t // pt
    if nf < 1 or nt < 2:
        raise ValueError(f"shuffle_patches_time: patch {pf}x{pt} leaves fewer than 2 tiles "
                         f"along time in a {f}x{t} input")
    region = x[..., :nf * pf, :nt * pt].reshape(b, c, nf, pf, nt, pt)
    perms = [partial_permutation(nt, fraction, generator) for _ in range(b * nf)]
    idx = torch.stack(perms).view(b, 1, nf, 1, nt, 1).to(x.device)
    shuffled = torch.gather(region, 4, idx.expand_as(region))
    out = x.clone()
    out[..., :nf * pf, :nt * pt] = shuffled.reshape(b, c, nf * pf, nt * pt)
    return out


def shuffle_patches_partial(x: torch.Tensor, patch: Sequence[int], fraction: float = 1.0,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Move ``patch`` = (bands, frames) tiles of [B, 1, F, T] in time and frequency:
    :func:`moved_tiles` of the example's tiles (``fraction``; 1: all) change places among
    themselves so that each of them moves (:func:`partial_permutation`), one draw per
    example; the others stay. The multiset of values is unchanged; cells beyond the last
    whole tile stay in place (as
    :func:`~lightning_modules.perturbations.shuffle_patches`)."""
    pf, pt = int(patch[0]), int(patch[1])
    f, t = x.shape[2:]
    n = (f // pf) * (t // pt)
    if n < 2:
        raise ValueError(f"shuffle_patches_partial: patch {pf}x{pt} leaves fewer than 2 tiles "
                         f"in a {f}x{t} input")
    perms = [partial_permutation(n, fraction, generator) for _ in range(x.shape[0])]
    return permute_tiles(x, patch, torch.stack(perms))


def _tile(perturbation: str, size: int, f: int) -> tuple[int, int]:
    """(bands, frames) tile of a shuffle on an F-band input: whole-height tiles of ``size``
    frames for ``shuffle_time``; for ``shuffle_time_freq`` ``size`` x ``size`` with the band
    size clipped to F // 2 (the 12-row chroma gets 2 tile rows)."""
    if perturbation == "shuffle_time":
        return f, int(size)
    return max(1, min(int(size), f // 2)), int(size)


def _tile_count(perturbation: str, tile: tuple[int, int], f: int, t: int) -> int:
    """The tiles one draw shuffles among: one row of tiles along time for ``shuffle_time``
    (whole-height: the only row), all of them for ``shuffle_time_freq``."""
    if perturbation == "shuffle_time":
        return t // tile[1]
    return (f // tile[0]) * (t // tile[1])


def plan_severities(shape: Sequence[int], sigmas: Sequence[float] = DEFAULT_SIGMAS,
                    fractions: Sequence[float] = DEFAULT_FRACTIONS,
                    time_tile: int = DEFAULT_TIME_TILE, tile: int = DEFAULT_TILE
                    ) -> tuple[list[dict], list[dict]]:
    """The (perturbation, severity) points an input of ``shape`` (..., F, T) takes, and the
    ones it does not: a tile that leaves fewer than 2 tiles (every fraction of that
    shuffle), or a fraction that moves as many tiles as a smaller one. Each point:
    ``perturbation``, ``severity`` (sigma, or the fraction of tiles moved),
    ``severity_unit`` and, for shuffles, ``tile`` (bands, frames), ``tiles`` (how many one
    draw shuffles among) and ``moved`` (:func:`moved_tiles`)."""
    f, t = int(shape[-2]), int(shape[-1])
    points, skipped = [], []
    for s in sigmas:
        if float(s) <= 0:
            raise ValueError(f"blur sigmas must be > 0, got {s}")
        points.append({"perturbation": "blur", "severity": float(s),
                       "severity_unit": "sigma (cells)"})
    for q in fractions:
        moved_tiles(2, q)  # validates the fraction
    for name, size in (("shuffle_time", time_tile), ("shuffle_time_freq", tile)):
        if int(size) < 1:
            raise ValueError(f"{name} tile size must be >= 1, got {size}")
        tl = _tile(name, size, f)
        n = _tile_count(name, tl, f, t)
        what = (f"{tl[1]}-frame tiles" if name == "shuffle_time"
                else f"{tl[0]}x{tl[1]} tiles (bands x frames)")
        first: dict[int, float] = {}  # tiles moved -> the smallest fraction moving that many
        if n >= 2:
            for q in sorted(float(v) for v in fractions):
                first.setdefault(moved_tiles(n, q), q)
        for q in (float(v) for v in fractions):
            if n < 2:
                reason = f"tile {tl[0]}x{tl[1]} leaves {n} tile(s) in a {f}x{t} input"
            else:
                k = moved_tiles(n, q)
                reason = (None if first[k] == q else
                          f"moves {k} of {n} {what}, as fraction {first[k]:g} does")
            if reason is not None or any(p["perturbation"] == name and p["severity"] == q
                                         for p in points):
                if reason is not None:
                    skipped.append({"perturbation": name, "severity": q, "reason": reason})
                continue  # a repeated fraction is one point
            points.append({"perturbation": name, "severity": q, "tile": tl, "tiles": n,
                           "moved": k,
                           "severity_unit": f"fraction of {what} moved ({k} of {n})"})
    return points, skipped


def perturb(x: torch.Tensor, point: Mapping, generator: torch.Generator | None = None
            ) -> torch.Tensor:
    """Apply one point of :func:`plan_severities` to [B, 1, F, T]."""
    name = point["perturbation"]
    if name == "blur":
        return gaussian_smooth(x, float(point["severity"]))
    if name == "shuffle_time":
        return shuffle_patches_time(x, point["tile"], generator, float(point["severity"]))
    if name == "shuffle_time_freq":
        return shuffle_patches_partial(x, point["tile"], float(point["severity"]), generator)
    raise ValueError(f"unknown perturbation {name!r}; choose from {PERTURBATIONS}")


def distortion(model, branch: str, clean: torch.Tensor, perturbed: torch.Tensor
               ) -> torch.Tensor:
    """[B]: the mean over cells of ``((perturbed - clean) / std) ** 2``, the squared change
    of the input after the model's normalisation by its ``{branch}_mean``/``{branch}_std``
    buffers (the mean cancels in the difference)."""
    std = getattr(model, f"{branch}_std").to(clean)
    return (((perturbed - clean) / std) ** 2).flatten(1).mean(dim=1)


# ---------------------------------------------------------------------------- sweeping
def _generator(seed: int, branch: str, point: Mapping) -> torch.Generator:
    """One generator per (branch, perturbation, severity): a point's shuffles do not depend
    on which other severities the sweep runs."""
    key = f"{int(seed)}/{branch}/{point['perturbation']}/{point['severity']}"
    return torch.Generator().manual_seed(zlib.crc32(key.encode()))


def _batches(dataset, idx: np.ndarray, batch_size: int) -> Iterator[dict]:
    for i in range(0, len(idx), int(batch_size)):
        yield dataset.batch(idx[i:i + int(batch_size)])


def severity_sweep(model, dataset, branches: Sequence[str] | None = None,
                   sigmas: Sequence[float] = DEFAULT_SIGMAS,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS,
                   time_tile: int = DEFAULT_TIME_TILE, tile: int = DEFAULT_TILE,
                   max_segments: int | None = None, batch_size: int = 64,
                   seed: int = 0) -> SeverityRows:
    """For each branch (default: ``model.branch_names``), each perturbation and severity:
    perturb only that branch's input and score the model. One row per point, plus a
    ``clean`` row per branch (severity None, distortion 0), columns
    :data:`TEXTURE_SHAPE_COLUMNS`: clip accuracy with its 95 % bootstrap CI over clips,
    ``prob_true`` the mean probability of the true class over segments, ``distortion``
    the mean over segments of :func:`distortion`. Severities: blur ``sigmas``; for both
    shuffles the ``fractions`` of their tiles moved, whole-height tiles of ``time_tile``
    frames (time shuffle) and ``tile`` x ``tile`` tiles, bands clipped to F // 2
    (time-frequency shuffle). Severities that leave fewer than 2 tiles, or move as many
    tiles as a smaller fraction, are logged and listed in ``.skipped``
    (:func:`plan_severities`).

    ``dataset``: ``SegmentDataset``-like (``clip_pos``, ``labels``, ``batch(indices)`` ->
    {"mel", "chroma", "label", "clip"}); whole clips up to ``max_segments`` segments
    (:func:`~lightning_modules.ablations.select_segments`). The model runs in eval mode
    without gradients; its training flags are restored. Seeded and deterministic.
    """
    names = tuple(model.branch_names)
    branches = names if branches is None else tuple(branches)
    unknown = [b for b in branches if b not in names]
    if unknown:
        raise ValueError(f"severity_sweep: the model has no branch {unknown}; its branches "
                         f"are {list(names)}")
    idx = select_segments(dataset.clip_pos, dataset.labels,
                          None if max_segments is None else int(max_segments))
    if len(idx) == 0:
        raise ValueError("severity_sweep: the dataset has no segments")
    dev = model_device(model)
    first = dataset.batch(idx[:1])
    plans = {b: plan_severities(first[b].shape, sigmas, fractions, time_tile, tile)
             for b in branches}
    gens = {(b, k): _generator(seed, b, p) for b in branches for k, p in enumerate(plans[b][0])}
    probs: dict[tuple, list] = {("clean",): []}
    dist: dict[tuple, list] = {}
    labels, clips = [], []
    with attribution_mode(model), torch.no_grad():
        for batch in _batches(dataset, idx, batch_size):
            x = {n: batch[n].to(dev, torch.float32) for n in names}
            labels.append(batch["label"].cpu().long())
            clips.append(batch["clip"].cpu())
            probs[("clean",)].append(model.segment_probs(x, batch_size=len(x[names[0]])))
            for b in branches:
                for k, point in enumerate(plans[b][0]):
                    p = perturb(x[b], point, gens[(b, k)])
                    dist.setdefault((b, k), []).append(distortion(model, b, x[b], p).cpu())
                    probs.setdefault((b, k), []).append(
                        model.segment_probs({**x, b: p}, batch_size=len(p)))
    y, c = torch.cat(labels), torch.cat(clips)
    n_clips = int(torch.unique(c).numel())

    def r6(v):
        return None if v is None else round(float(v), 6)

    def score(key) -> dict:
        pr = torch.cat(probs[key])
        correct = clip_correct(pr, y, c)
        lo, hi = bootstrap_ci(correct, seed)
        return {"acc_clip": r6(correct.mean()), "acc_clip_ci_low": r6(lo),
                "acc_clip_ci_high": r6(hi),
                "prob_true": r6(pr.gather(1, y.view(-1, 1)).mean()),
                "clips": n_clips, "segments": len(idx)}

    clean = score(("clean",))
    rows, skipped = [], []
    for b in branches:
        rows.append({"branch": b, "perturbation": "clean", "severity": None,
                     "severity_unit": None, "distortion": 0.0, **clean})
        for k, point in enumerate(plans[b][0]):
            rows.append({"branch": b, "perturbation": point["perturbation"],
                         "severity": point["severity"], "severity_unit": point["severity_unit"],
                         "distortion": r6(torch.cat(dist[(b, k)]).double().mean()),
                         **score((b, k))})
        for s in plans[b][1]:
            log.warning("severity_sweep: %s %s %s skipped: %s", b, s["perturbation"],
                        s["severity"], s["reason"])
            skipped.append({"branch": b, **s})
    return SeverityRows([{k: r[k] for k in TEXTURE_SHAPE_COLUMNS} for r in rows], skipped)


# ------------------------------------------------------------------------------ reading
def _curve(rows: Sequence[Mapping], branch: str, perturbation: str
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distortion, accuracy, measured) of one curve with the branch's clean point, sorted
    by distortion; ``measured`` is False for the clean point."""
    pts = [(float(r["distortion"]), float(r["acc_clip"]), r["perturbation"] != "clean")
           for r in rows if r["branch"] == branch
           and r["perturbation"] in ("clean", perturbation)]
    pts.sort(key=lambda p: (p[0], p[2]))
    if not pts:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
    d, a, m = map(np.asarray, zip(*pts))
    return d, a, m.astype(bool)


def accuracy_at_distortion(rows: Sequence[Mapping], branch: str, perturbation: str,
                           d: float) -> float:
    """Clip accuracy at distortion ``d`` on the curve of ``perturbation`` (clean point
    included), linearly interpolated between the points sorted by distortion; nan outside
    the curve's range."""
    dist, acc, _ = _curve(rows, branch, perturbation)
    if len(dist) == 0 or not dist[0] <= float(d) <= dist[-1]:
        return float("nan")
    return float(np.interp(float(d), dist, acc))


def texture_vs_shape(rows: Sequence[Mapping], branch: str) -> dict:
    """The perturbations' accuracies at equal distortion, for one branch.

    ``levels``: where the curves overlap (``overlap``), the two ends of the distortion range
    every measured curve covers (``measured_range``: from the largest first measured point
    to the smallest last one), so every value is read between measured points; otherwise
    half of, and all of, the largest distortion every curve reaches, read on the straight
    line from the clean point where a curve starts later (empty when they share no range
    beyond the clean point). Returns ``branch``, ``clean`` (accuracy), ``max_distortion``
    per perturbation, ``levels``, ``measured_range`` ((low, high), or None without
    overlap), ``overlap``, ``accuracy`` {perturbation: [accuracy at each level]},
    ``from_clean`` {perturbation: [whether that value lies between the clean point and the
    curve's first measured point]}, ``verdict`` at the top level: ``"texture"`` when blur
    leaves less accuracy than the time shuffle (removing texture hurts more), ``"shape"``
    when more, ``"tie"``, or None without both curves, and ``summary``, one sentence.
    """
    present = [p for p in PERTURBATIONS
               if any(r["branch"] == branch and r["perturbation"] == p for r in rows)]
    clean = [float(r["acc_clip"]) for r in rows
             if r["branch"] == branch and r["perturbation"] == "clean"]
    if not clean:
        raise ValueError(f"texture_vs_shape: no clean row for branch {branch!r}")
    curves = {p: _curve(rows, branch, p) for p in present}
    top = {p: float(curves[p][0][-1]) for p in present}
    start = {p: float(curves[p][0][curves[p][2]].min()) for p in present}
    common = min(top.values()) if top else 0.0
    low = max(start.values()) if start else 0.0
    overlap = bool(common > 0 and low <= common)
    levels = [low, common] if overlap else [common / 2, common] if common > 0 else []
    acc = {p: [accuracy_at_distortion(rows, branch, p, d) for d in levels] for p in present}
    from_clean = {p: [bool(d < start[p]) for d in levels] for p in present}
    verdict = None
    if levels and "blur" in acc and "shuffle_time" in acc:
        blur, shuffle = acc["blur"][-1], acc["shuffle_time"][-1]
        verdict = "texture" if blur < shuffle else "shape" if blur > shuffle else "tie"
    if levels:
        parts = ", ".join(f"{PERTURBATION_TITLES[p]} {100 * acc[p][-1]:.0f} %" for p in present)
        read = [PERTURBATION_TITLES[p] for p in present if from_clean[p][-1]]
        summary = (f"{branch}: at equal distortion {common:.3g} (mean squared change of the "
                   f"normalised input), {parts} clip accuracy (clean {100 * clean[0]:.0f} %)"
                   + (f"; {', '.join(read)} read on the line from the clean point, below "
                      f"its mildest measured severity" if read else "")
                   + (f"; removing {verdict} hurts more" if verdict in ("texture", "shape")
                      else ""))
    else:
        summary = f"{branch}: the perturbations share no distortion range beyond clean"
    return {"branch": branch, "clean": clean[0], "max_distortion": top, "levels": levels,
            "measured_range": (low, common) if overlap else None, "overlap": overlap,
            "accuracy": acc, "from_clean": from_clean, "verdict": verdict, "summary": summary}


# ------------------------------------------------------------------------------ figure
def save_severity_figure(path: Path, rows: Sequence[Mapping], chance: float,
                         title: str = "") -> Path:
    """Clip accuracy against distortion: one curve per (perturbation, branch) with the
    clean point at 0, colour per branch, line style per perturbation (the segment from the
    clean point to the mildest severity faint: interpolated, not measured), the 95 % CI as
    a shaded band, each point labelled with its severity, the top matched level of
    :func:`texture_vs_shape` dotted, chance dashed."""
    from lightning_modules.callbacks.plots import _save, plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    branches = list(dict.fromkeys(r["branch"] for r in rows))
    for b in branches:
        colour = BRANCH_COLOURS.get(b)
        for p in PERTURBATIONS:
            pts = [r for r in rows if r["branch"] == b and r["perturbation"] in ("clean", p)]
            if not any(r["perturbation"] == p for r in pts):
                continue
            pts.sort(key=lambda r: (float(r["distortion"]), r["perturbation"] != "clean"))
            d = np.array([float(r["distortion"]) for r in pts])
            acc = np.array([float(r["acc_clip"]) for r in pts])
            lo = np.array([float(r["acc_clip_ci_low"]) for r in pts])
            hi = np.array([float(r["acc_clip_ci_high"]) for r in pts])
            measured = np.array([r["perturbation"] != "clean" for r in pts])
            first = int(np.argmax(measured))  # the clean point sorts first (distortion 0)
            ax.fill_between(d, lo, hi, color=colour, alpha=0.12, linewidth=0)
            # The straight line from the clean point to the mildest severity is read, not
            # measured: drawn faint.
            ax.plot(d[:first + 1], acc[:first + 1], PERTURBATION_STYLES[p], color=colour,
                    alpha=0.35, linewidth=1)
            ax.plot(d[first:], acc[first:], PERTURBATION_STYLES[p], marker="o", markersize=3,
                    color=colour, label=f"{b}, {PERTURBATION_TITLES[p]}")
            for r, x, yv in zip(pts, d, acc):
                if r["perturbation"] != "clean":
                    ax.annotate(f"{r['severity']:g}", (x, yv), textcoords="offset points",
                                xytext=(3, 3), fontsize=6, color=colour)
        levels = texture_vs_shape(rows, b)["levels"]
        if levels:
            ax.axvline(levels[-1], color=colour, linestyle=":", linewidth=0.8, alpha=0.7,
                       label=f"{b}: largest distortion all reach ({levels[-1]:.2g})")
    ax.axhline(chance, color="red", linestyle="--", linewidth=1, label=f"chance {chance:.2f}")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("distortion: mean squared change of the normalised input")
    ax.set_ylabel("clip accuracy (95 % bootstrap CI)")
    ax.set_title("texture (blur) vs shape (shuffles) at matched distortion; labels: sigma or "
                 "fraction of tiles moved", fontsize=9)
    ax.legend(fontsize=7, loc="best", handlelength=3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
