"""The interpretability report of one trained model: faithfulness, sanity checks, texture
vs shape, as rows of one long-format ``interpretability.csv`` and flat summary floats.

Sections (column ``section``):

- ``deletion`` / ``insertion`` (:mod:`lightning_modules.faithfulness`): per branch and
  ranking (each method, its shifted self, random blobs, the randomised model), the curve
  points (``x`` = fraction, ``metric`` = ``prob`` or ``acc_clip``), the AUCs (``prob_auc``,
  ``acc_clip_auc``) and each method's paired AUC difference from each baseline
  (``prob_auc_minus_<baseline>``), all with 95 % bootstrap CIs over clips;
- ``sanity_cascading`` / ``sanity_labels`` (:mod:`lightning_modules.sanity`): the rank
  correlation of each method's maps with the trained model's after each cascade step
  (``step``, the block in ``detail``) and for the label-randomised model (whose accuracy on
  its permuted training labels is the row ``permuted_label_acc``); ``sanity`` rows give
  ``passes`` (1 or 0) per branch and method with the rule in ``detail``;
- ``texture_shape`` (:mod:`lightning_modules.texture_shape`): clip accuracy per
  perturbation (``method``) and severity (``step``; its unit in ``detail``), ``x`` = the
  distortion of the normalised input; ``texture_shape_matched`` rows read every curve at
  the largest distortion all of them reach (``x``), the verdict in ``detail``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

COLUMNS = ("section", "branch", "method", "step", "detail", "x", "metric", "value", "ci_low",
           "ci_high", "n")


def _row(**kw) -> dict:
    return {c: kw.get(c) for c in COLUMNS}


@dataclass
class InterpretabilityReport:
    rows: list[dict] = field(default_factory=list)
    results: dict[str, float] = field(default_factory=dict)  # interpretability/... floats
    faithfulness: object = None      # FaithfulnessResult
    severity: list = field(default_factory=list)   # texture_shape rows
    sanity: dict = field(default_factory=dict)     # summarise(): branch/method -> verdict
    verdicts: dict = field(default_factory=dict)   # branch -> texture_vs_shape()


def sanity_rows(rows: Sequence[Mapping], permuted_acc: float | None,
                verdicts: Mapping[str, Mapping], threshold: float) -> list[dict]:
    out = [_row(section=f"sanity_{r['check']}", branch=r["branch"], method=r["method"],
                step=r["step"], detail=r["block"], metric="spearman", value=r["spearman"],
                ci_low=r["spearman_ci_low"], ci_high=r["spearman_ci_high"], n=r["examples"])
           for r in rows]
    if permuted_acc is not None:
        out.append(_row(section="sanity_labels", metric="permuted_label_acc",
                        value=round(float(permuted_acc), 6)))
    rule = f"rank correlation below {threshold:g} after every randomisation run"
    for key, v in verdicts.items():
        branch, method = key.split("/", 1)
        out.append(_row(section="sanity", branch=branch, method=method, detail=rule,
                        metric="passes", value=int(v["passes"])))
    return out


def severity_rows(rows: Sequence[Mapping]) -> list[dict]:
    return [_row(section="texture_shape", branch=r["branch"], method=r["perturbation"],
                 step=r["severity"], detail=r["severity_unit"], x=r["distortion"],
                 metric="acc_clip", value=r["acc_clip"], ci_low=r["acc_clip_ci_low"],
                 ci_high=r["acc_clip_ci_high"], n=r["clips"]) for r in rows]


class SegmentSubset:
    """The segments ``idx`` of a ``SegmentDataset``-like object (its ``clip_pos``,
    ``labels`` per clip and ``batch``), e.g. whole training clips for the label check."""

    def __init__(self, dataset, idx):
        self.dataset = dataset
        self.idx = np.asarray(idx, dtype=np.int64)
        self.clip_pos = np.asarray(dataset.clip_pos)[self.idx]
        self.labels = dataset.labels

    def __len__(self) -> int:
        return len(self.idx)

    def batch(self, indices):
        return self.dataset.batch(self.idx[np.asarray(indices, dtype=np.int64)])


def run_interpretability(model, dataset, train_dataset=None,
                         methods: Sequence[str] = ("gradcam", "guided_gradcam",
                                                   "integrated_gradients"),
                         fractions: Sequence[float] | None = None,
                         max_segments: int | None = None, sanity_segments: int = 32,
                         label_epochs: int = 10, label_segments: int | None = 256,
                         severity: Mapping | None = None,
                         batch_size: int = 64, seed: int = 0,
                         threshold: float | None = None) -> InterpretabilityReport:
    """Every section (module docstring) for ``model`` (eval mode, not modified) on
    ``dataset``: faithfulness and texture vs shape on whole clips up to ``max_segments``
    segments, the randomisation checks on whole clips up to ``sanity_segments`` segments;
    the label check trains a re-initialised copy for ``label_epochs`` epochs on whole clips
    of ``train_dataset`` up to ``label_segments`` segments, with permuted labels (skipped
    when 0 or without ``train_dataset``)."""
    from lightning_modules.ablations import select_segments
    from lightning_modules.faithfulness import FRACTIONS, run_faithfulness
    from lightning_modules.sanity import (
        DEFAULT_THRESHOLD,
        cascading_randomisation,
        fit_permuted_labels,
        label_randomisation,
        summarise,
    )
    from lightning_modules.texture_shape import severity_sweep, texture_vs_shape

    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    methods = tuple(methods)
    rep = InterpretabilityReport()
    faith = run_faithfulness(model, dataset, methods=methods,
                             fractions=FRACTIONS if fractions is None else fractions,
                             max_segments=max_segments, batch_size=batch_size, seed=seed)
    rep.faithfulness = faith
    rep.rows += [_row(**r, detail=None) for r in faith.rows]
    rep.results.update(faith.results)

    idx = select_segments(dataset.clip_pos, dataset.labels, int(sanity_segments))
    inputs = {k: v for k, v in dataset.batch(idx).items() if k in model.branch_names}
    checks = cascading_randomisation(model, inputs, methods=methods, seed=seed,
                                     batch_size=batch_size)
    permuted_acc = None
    if train_dataset is not None and int(label_epochs) > 0:
        cap = None if label_segments is None else int(label_segments)
        train = SegmentSubset(train_dataset, select_segments(train_dataset.clip_pos,
                                                             train_dataset.labels, cap))
        random_model, permuted_acc = fit_permuted_labels(model, train, epochs=int(label_epochs),
                                                         seed=seed)
        checks += label_randomisation(model, random_model, inputs, methods=methods,
                                      batch_size=batch_size, seed=seed)
        rep.results["interpretability/permuted_label_acc"] = float(permuted_acc)
    rep.sanity = summarise(checks, threshold)
    rep.rows += sanity_rows(checks, permuted_acc, rep.sanity, threshold)
    for key, v in rep.sanity.items():
        branch, method = key.split("/", 1)
        rep.results[f"interpretability/sanity_passes_{method}_{branch}"] = float(v["passes"])
        if v["final_cascading"] is not None:
            rep.results[f"interpretability/sanity_cascading_{method}_{branch}"] = \
                float(v["final_cascading"])
        if v["labels"] is not None:
            rep.results[f"interpretability/sanity_labels_{method}_{branch}"] = float(v["labels"])

    sev = severity_sweep(model, dataset, max_segments=max_segments, batch_size=batch_size,
                         seed=seed, **dict(severity or {}))
    rep.severity = list(sev)
    rep.rows += severity_rows(sev)
    for branch in model.branch_names:
        verdict = texture_vs_shape(sev, branch)
        rep.verdicts[branch] = verdict
        for p, accs in verdict["accuracy"].items():
            if accs and np.isfinite(accs[-1]):
                rep.results[f"interpretability/acc_at_matched_distortion_{p}_{branch}"] = \
                    float(accs[-1])
                rep.rows.append(_row(section="texture_shape_matched", branch=branch, method=p,
                                     detail=verdict["summary"], x=verdict["levels"][-1],
                                     metric="acc_clip", value=round(float(accs[-1]), 6)))
    return rep
