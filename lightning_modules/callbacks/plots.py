"""Figures for the interpretability callbacks and ``experiments.explain`` (matplotlib, Agg).

Axes are physical: time in seconds (frames x hop / sample rate), the log-Mel's y axis in Hz
at the Mel band centre frequencies of the feature parameters (same ``mel_scale``, ``f_min``,
``f_max`` as the filterbank, so the axis is Mel-warped and labelled in Hz), the chroma's y
axis in pitch classes C .. B (librosa's chroma filterbank starts at C).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from datamodules.features import PITCH_CLASSES  # noqa: E402
from lightning_modules.attribution import METHODS, SIGNED  # noqa: E402

METHOD_TITLES = {"gradcam": "Grad-CAM", "guided_gradcam": "Guided Grad-CAM",
                 "integrated_gradients": "Integrated Gradients"}
BRANCH_TITLES = {"mel": "log-Mel spectrogram", "chroma": "chromagram"}
_HZ_TICKS = (32, 64, 125, 250, 500, 1000, 2000, 4000, 8000, 16000)


def mel_band_centres(n_mels: int, sample_rate: int = 22050, f_min: float = 0.0,
                     f_max: float | None = None, mel_scale: str = "slaney") -> np.ndarray:
    """Centre frequency (Hz) of each of ``n_mels`` triangular Mel bands: the inner points of
    ``n_mels + 2`` equally Mel-spaced frequencies, as ``torchaudio.functional.melscale_fbanks``
    and ``librosa.filters.mel`` place them."""
    import librosa

    f_max = sample_rate / 2 if f_max is None else float(f_max)
    pts = librosa.mel_frequencies(int(n_mels) + 2, fmin=float(f_min), fmax=f_max,
                                  htk=str(mel_scale) == "htk")
    return np.asarray(pts[1:-1], dtype=float)


@dataclass
class FeatureAxes:
    """What a frame and a band mean physically, from a checkpoint's ``extra``."""

    seconds_per_frame: float
    mel_hz: np.ndarray
    n_chroma: int = 12

    @classmethod
    def from_extra(cls, extra: Mapping | None, mel_bins: int | None = None) -> "FeatureAxes":
        """``extra``: ``{"features": {hop_length, n_mels, f_min, f_max, mel_scale, ...},
        "audio": {sample_rate, ...}}`` (missing values: the project defaults, 22,050 Hz,
        hop 512, Slaney scale). ``mel_bins`` (the model's Mel input size) wins over n_mels."""
        extra = dict(extra or {})
        feats = dict(extra.get("features") or {})
        audio = dict(extra.get("audio") or {})
        sr = int(audio.get("sample_rate") or feats.get("sample_rate") or 22050)
        hop = int(feats.get("hop_length") or 512)
        n_mels = int(mel_bins or feats.get("n_mels") or 128)
        hz = mel_band_centres(n_mels, sr, float(feats.get("f_min") or 0.0), feats.get("f_max"),
                              str(feats.get("mel_scale") or "slaney"))
        return cls(seconds_per_frame=hop / sr, mel_hz=hz,
                   n_chroma=int(feats.get("n_chroma") or 12))

    @classmethod
    def from_model(cls, model) -> "FeatureAxes":
        bins = getattr(model, "inputs", {}).get("mel")
        return cls.from_extra(getattr(model, "hparams", {}).get("extra"), bins)

    def pitch_names(self, n: int | None = None) -> list[str]:
        n = self.n_chroma if n is None else n
        if n == 12:
            return list(PITCH_CLASSES)
        return [f"{PITCH_CLASSES[int(i * 12 / n) % 12]}{'+' if (i * 12) % n else ''}"
                for i in range(n)]


def _fmt_hz(f: float) -> str:
    return f"{f / 1000:g}k" if f >= 1000 else f"{f:g}"


def set_freq_axis(ax, branch: str, n_bins: int, axes: FeatureAxes, label: bool = True) -> None:
    """Mel: ticks at round frequencies placed on the band-index grid; chroma: pitch classes."""
    if branch == "mel":
        hz = axes.mel_hz if len(axes.mel_hz) == n_bins else mel_band_centres(n_bins)
        pos, names = [], []
        for f in sorted(_HZ_TICKS, reverse=True):
            y = float(np.interp(f, hz, np.arange(n_bins)))
            # From the top down: skip ticks off the axis or too close to the last one kept
            # (the Mel axis crowds low frequencies together).
            if hz[0] <= f <= hz[-1] and (not pos or pos[-1] - y >= 0.07 * n_bins):
                pos.append(y)
                names.append(_fmt_hz(f))
        ax.set_yticks(pos[::-1], names[::-1])
        if label:
            ax.set_ylabel("frequency (Hz)")
    else:
        names = axes.pitch_names(n_bins)
        ax.set_yticks(range(n_bins), names, fontsize=7)
        if label:
            ax.set_ylabel("pitch class")


def draw_panel(ax, fig, base: np.ndarray, branch: str, axes: FeatureAxes, t0: float = 0.0,
               overlay: np.ndarray | None = None, kind: str = "input", title: str = "",
               xlabel: bool = True):
    """One panel: ``kind="input"`` (the feature alone, dB or chroma energy), ``"gradcam"``
    (the feature in grey with the [0, 1] map in colour on top), ``"guided_gradcam"`` or
    ``"integrated_gradients"`` (the signed map in a diverging colour scale). Adds a colourbar;
    returns the image."""
    f, t = base.shape
    extent = (t0, t0 + t * axes.seconds_per_frame, -0.5, f - 0.5)
    common = dict(origin="lower", aspect="auto", extent=extent, interpolation="nearest")
    if kind == "input":
        im = ax.imshow(base, cmap="magma", **common)
        fig.colorbar(im, ax=ax, pad=0.01, fraction=0.04,
                     label="dB" if branch == "mel" else "energy")
    elif kind == "gradcam":
        ax.imshow(base, cmap="gray", **common)
        im = ax.imshow(overlay, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, **common)
        fig.colorbar(im, ax=ax, pad=0.01, fraction=0.04, label="Grad-CAM")
    elif kind in SIGNED:
        im = ax.imshow(overlay, cmap="RdBu_r", vmin=-1.0, vmax=1.0, **common)
        fig.colorbar(im, ax=ax, pad=0.01, fraction=0.04, label=METHOD_TITLES[kind])
    else:
        raise ValueError(f"draw_panel: unknown kind {kind!r}")
    set_freq_axis(ax, branch, f, axes)
    if xlabel:
        ax.set_xlabel("time (s)")
    if title:
        ax.set_title(title, fontsize=9)
    return im


def save_segment_figure(path: Path, inputs: Mapping[str, np.ndarray],
                        maps: Mapping[str, Mapping[str, np.ndarray]], axes: FeatureAxes,
                        methods: Sequence[str], title: str, t0: float = 0.0) -> Path:
    """One segment: a column per branch (log-Mel, chroma), rows = the input then one row per
    method (Grad-CAM over the input; the signed methods on their own). ``inputs[b]`` [F, T]
    raw features, ``maps[b][m]`` [F, T] normalised maps."""
    branches = [b for b in ("mel", "chroma") if b in maps]
    rows = 1 + len(methods)
    fig, grid = plt.subplots(rows, len(branches), figsize=(5.6 * len(branches), 2.5 * rows),
                             squeeze=False)
    for j, b in enumerate(branches):
        for i in range(rows):
            ax = grid[i, j]
            if i == 0:
                draw_panel(ax, fig, inputs[b], b, axes, t0, kind="input",
                           title=f"{b}: {BRANCH_TITLES.get(b, b)}", xlabel=rows == 1)
            else:
                m = methods[i - 1]
                draw_panel(ax, fig, inputs[b], b, axes, t0, overlay=maps[b][m], kind=m,
                           title=f"{b}: {METHOD_TITLES.get(m, m)}", xlabel=i == rows - 1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def save_file_figure(path: Path, base: np.ndarray, maps: Mapping[str, np.ndarray], branch: str,
                     axes: FeatureAxes, title: str, top: Mapping | None = None,
                     covered: np.ndarray | None = None) -> Path:
    """A whole file, one branch: the input, then each method's map stitched over the
    segments (Grad-CAM as an overlay), one row each. ``top`` (``time_s``; ``bins``: Mel
    [lo, hi] band range, chroma pitch-class indices) is outlined on the Grad-CAM row; frames
    no segment covers (``covered`` [T] False) are hatched on the map rows."""
    t_seconds = base.shape[1] * axes.seconds_per_frame
    width = float(np.clip(4 + 0.35 * t_seconds, 8, 20))
    kinds = [m for m in METHODS if m in maps]
    rows = 1 + len(kinds)
    height = (2.6 if branch == "mel" else 1.8) * rows + 0.6
    fig, grid = plt.subplots(rows, 1, figsize=(width, height), squeeze=False)
    draw_panel(grid[0, 0], fig, base, branch, axes, kind="input",
               title=BRANCH_TITLES.get(branch, branch), xlabel=False)
    for i, m in enumerate(kinds, start=1):
        ax = grid[i, 0]
        draw_panel(ax, fig, base, branch, axes, overlay=maps[m], kind=m,
                   title=METHOD_TITLES.get(m, m), xlabel=i == rows - 1)
        if m == "gradcam" and top:
            t0, t1 = top["time_s"]
            spans = ([(top["bins"][0], top["bins"][-1])] if branch == "mel"
                     else [(b, b) for b in top["bins"]])
            for lo, hi in spans:
                ax.add_patch(Rectangle((t0, lo - 0.5), t1 - t0, hi - lo + 1, fill=False,
                                       edgecolor="white", linestyle="--", linewidth=1.5))
        if covered is not None and not np.all(covered):
            spf = axes.seconds_per_frame
            for a, b in _runs(~np.asarray(covered, dtype=bool)):
                ax.axvspan(a * spf, b * spf, facecolor="none", edgecolor="0.6", hatch="//",
                           linewidth=0, label="no segment")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index runs where ``mask`` is True."""
    d = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]))


def save_ablation_figure(path: Path, accuracies: Mapping[str, float], chance: float,
                         title: str = "",
                         intervals: Mapping[str, tuple[float, float]] | None = None) -> Path:
    """Clip accuracy per condition: bars with their 95 % CI from ``intervals``, chance level
    dashed."""
    intervals = intervals or {}
    fig, ax1 = plt.subplots(figsize=(6.4, 4.2))
    names = list(accuracies)
    vals = [accuracies[n] for n in names]
    colours = ["#444444" if n == "clean" else "#3b75af" for n in names]
    err = None
    if all(n in intervals for n in names):
        err = np.array([[max(0.0, v - intervals[n][0]) for n, v in zip(names, vals)],
                        [max(0.0, intervals[n][1] - v) for n, v in zip(names, vals)]])
    bars = ax1.bar(range(len(names)), vals, color=colours, yerr=err, capsize=3)
    for i, (bar, v) in enumerate(zip(bars, vals)):
        top = v if err is None else v + err[1, i]
        ax1.text(bar.get_x() + bar.get_width() / 2, top + 0.01, f"{v:.2f}", ha="center",
                 va="bottom", fontsize=8)
    ax1.axhline(chance, color="red", linestyle="--", linewidth=1, label=f"chance {chance:.2f}")
    ax1.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
    ax1.set_ylim(0, 1.08)
    ax1.set_ylabel("clip accuracy" + (" (95 % bootstrap CI)" if err is not None else ""))
    ax1.set_title("input ablations", fontsize=10)
    ax1.legend(fontsize=8, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_faithfulness_figure(path: Path, scores: Mapping[tuple, Mapping[str, np.ndarray]],
                             fractions: Sequence[float], title: str = "") -> Path:
    """Deletion (top row) and insertion (bottom row) curves, a column per branch: the mean
    over clips of the explained class's probability against the fraction of cells deleted
    or inserted, one line per ranking with its AUC. ``scores[(kind, branch, ranking)]`` as
    in :class:`~lightning_modules.faithfulness.FaithfulnessResult`."""
    from lightning_modules.ablations import curve_auc

    branches = list(dict.fromkeys(b for _, b, _ in scores))
    rankings = list(dict.fromkeys(r for _, _, r in scores))
    fig, grid = plt.subplots(2, len(branches), figsize=(5.4 * len(branches), 7.4),
                             squeeze=False)
    palette = plt.get_cmap("tab10")
    fr = np.asarray(fractions, dtype=float)
    for j, b in enumerate(branches):
        for i, kind in enumerate(("deletion", "insertion")):
            ax = grid[i, j]
            for k, r in enumerate(rankings):
                if (kind, b, r) not in scores:
                    continue
                curve = scores[(kind, b, r)]["prob"].mean(axis=0)
                style = "--" if r.startswith("shifted_") else ":" if r in (
                    "random_blobs", "randomised_model") else "-"
                ax.plot(fr * 100, curve, style, marker="o", markersize=2.5, color=palette(k),
                        label=f"{METHOD_TITLES.get(r, r)} (AUC {curve_auc(fr, curve):.2f})")
            ax.set_ylim(0, 1.02)
            ax.set_xlabel(f"cells {'deleted' if kind == 'deletion' else 'inserted'}, most "
                          "attributed first (%)")
            ax.set_ylabel("p(explained class)")
            ax.set_title(f"{b}: {kind}", fontsize=10)
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
