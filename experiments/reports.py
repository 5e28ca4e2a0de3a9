"""Figures and tables written into run directories (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def save_confusion_png(cm: np.ndarray, labels: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix with counts; rows are true genres."""
    cm = np.asarray(cm)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.55 * n))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted genre")
    ax.set_ylabel("true genre")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if frac[i, j] > 0.5 else "black")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title}\naccuracy {acc:.3f} ({int(np.trace(cm))}/{int(cm.sum())} clips)",
                 fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true genre")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """[n, n] counts, rows the true class."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y), np.asarray(pred)), 1)
    return cm


def per_class_report(cm: np.ndarray, labels: list[str]) -> list[dict]:
    """Precision, recall, F1 and support per class from a confusion matrix (rows true)."""
    cm = np.asarray(cm, dtype=float)
    out = []
    for i, name in enumerate(labels):
        tp = cm[i, i]
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i].sum() if cm[i].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out.append({"genre": name, "precision": round(prec, 4), "recall": round(rec, 4),
                    "f1": round(f1, 4), "support": int(cm[i].sum())})
    return out


def write_predictions(path: Path, clips: pd.DataFrame, probs: np.ndarray,
                      labels: list[str]) -> Path:
    """Per-clip predictions: ``clip_id``, true ``genre``, ``predicted``, ``correct`` and the
    mean segment probability ``p_<genre>`` of every class (what paired tests read)."""
    probs = np.asarray(probs)
    pred = pd.DataFrame({"clip_id": clips["clip_id"].to_numpy(),
                         "genre": clips["genre"].to_numpy(),
                         "predicted": [labels[i] for i in probs.argmax(1)]})
    pred["correct"] = (pred["predicted"] == pred["genre"]).astype(int)
    for j, g in enumerate(labels):
        pred[f"p_{g}"] = np.round(probs[:, j], 5)
    path.parent.mkdir(parents=True, exist_ok=True)
    pred.to_csv(path, index=False)
    return path
