"""Clip-level voting: a clip's prediction is the mean of its segments' softmax
probabilities.

``ClipVoting`` is a torchmetrics ``Metric`` so it is correct under DDP: each rank adds its
segments' probabilities, and the states are summed (fixed number of clips) or concatenated
(unknown number of clips) across ranks before ``compute``.
"""
from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multiclass_f1_score,
)
from torchmetrics.utilities import dim_zero_cat


class ClipVoting(Metric):
    """Mean-probability vote per clip, then clip-level accuracy, macro F1 and confusion.

    ``update(probs [N, C] float, labels [N] long, clips [N] long)`` takes segment
    probabilities, segment labels and each segment's clip index (position in the split's
    clip list). With ``num_clips`` known the states are per-clip sums
    (``prob_sum`` [num_clips, C], ``label_count`` [num_clips, C], ``count`` [num_clips],
    ``dist_reduce_fx="sum"``); without it, per-segment rows are kept and concatenated
    across ranks (``dist_reduce_fx="cat"``) and summed at ``compute``.

    ``compute()`` returns a dict over the clips that have at least one segment:
    ``acc`` (scalar), ``f1_macro`` (scalar), ``confusion`` ([C, C] long, rows = true
    class), ``probs`` ([n_clips, C] mean probabilities, NaN rows for clips never seen) and
    ``labels`` ([n_clips] long, -1 for clips never seen). ``n_clips`` is ``num_clips``, or
    the largest clip index seen + 1.

    Under DDP with a ``DistributedSampler`` the few segments it repeats to even out the
    ranks are voted twice; that shifts a clip's mean slightly, never its membership.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_classes: int, num_clips: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.num_clips = None if num_clips is None else int(num_clips)
        if self.num_clips is not None:
            c, n = self.num_classes, self.num_clips
            self.add_state("prob_sum", torch.zeros(n, c), dist_reduce_fx="sum")
            self.add_state("label_count", torch.zeros(n, c), dist_reduce_fx="sum")
            self.add_state("count", torch.zeros(n), dist_reduce_fx="sum")
        else:
            self.add_state("seg_probs", [], dist_reduce_fx="cat")
            self.add_state("seg_labels", [], dist_reduce_fx="cat")
            self.add_state("seg_clips", [], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, labels: torch.Tensor, clips: torch.Tensor) -> None:
        if probs.dim() != 2 or probs.shape[1] != self.num_classes:
            raise ValueError(f"ClipVoting: probs must be [N, {self.num_classes}], got "
                             f"{tuple(probs.shape)}")
        labels, clips = labels.reshape(-1).long(), clips.reshape(-1).long()
        if not len(labels) == len(clips) == probs.shape[0]:
            raise ValueError(f"ClipVoting: probs {tuple(probs.shape)}, labels "
                             f"{tuple(labels.shape)} and clips {tuple(clips.shape)} differ in N")
        if len(clips) and int(clips.min()) < 0:
            raise ValueError("ClipVoting: clip indices must be >= 0")
        if self.num_clips is not None:
            if len(clips) and int(clips.max()) >= self.num_clips:
                raise ValueError(f"ClipVoting: clip index {int(clips.max())} is out of range for "
                                 f"num_clips={self.num_clips}; the datamodule's num_clips() and "
                                 f"the batches' 'clip' field disagree")
            self.prob_sum.index_add_(0, clips, probs.detach().to(self.prob_sum.dtype))
            onehot = torch.nn.functional.one_hot(labels, self.num_classes).to(self.label_count)
            self.label_count.index_add_(0, clips, onehot)
            self.count.index_add_(0, clips, torch.ones_like(clips, dtype=self.count.dtype))
        else:
            self.seg_probs.append(probs.detach().float())
            self.seg_labels.append(labels)
            self.seg_clips.append(clips)

    def _tables(self):
        """(prob_sum [n, C], label_count [n, C], count [n]) from either state layout."""
        if self.num_clips is not None:
            return self.prob_sum, self.label_count, self.count
        probs = dim_zero_cat(self.seg_probs) if len(self.seg_probs) else None
        if probs is None or probs.numel() == 0:
            z = torch.zeros(0, self.num_classes, device=self.device)
            return z, z, torch.zeros(0, device=self.device)
        labels, clips = dim_zero_cat(self.seg_labels), dim_zero_cat(self.seg_clips)
        n = int(clips.max()) + 1
        prob_sum = torch.zeros(n, self.num_classes, dtype=probs.dtype, device=probs.device)
        prob_sum.index_add_(0, clips, probs)
        label_count = torch.zeros(n, self.num_classes, device=probs.device)
        label_count.index_add_(0, clips, torch.nn.functional.one_hot(labels, self.num_classes)
                               .float())
        count = torch.zeros(n, device=probs.device).index_add_(
            0, clips, torch.ones_like(clips, dtype=torch.float))
        return prob_sum, label_count, count

    def compute(self) -> dict[str, torch.Tensor]:
        prob_sum, label_count, count = self._tables()
        seen = count > 0
        mixed = ((label_count > 0).sum(1) > 1) & seen
        if bool(mixed.any()):
            bad = torch.nonzero(mixed).flatten()[:5].tolist()
            raise ValueError(f"ClipVoting: clips {bad} have segments with different labels; "
                             f"'clip' must index one clip (one label) in the split")
        mean = prob_sum / count.clamp(min=1).unsqueeze(1)
        labels = label_count.argmax(1)
        preds = mean.argmax(1)
        p, t = preds[seen], labels[seen]
        c = self.num_classes
        if len(t):
            acc = (p == t).float().mean()
            f1 = multiclass_f1_score(p, t, c, average="macro")
            confusion = multiclass_confusion_matrix(p, t, c)
        else:
            acc = f1 = torch.tensor(float("nan"), device=mean.device)
            confusion = torch.zeros(c, c, dtype=torch.long, device=mean.device)
        mean[~seen] = float("nan")
        labels = torch.where(seen, labels, torch.full_like(labels, -1))
        return {"acc": acc, "f1_macro": f1, "confusion": confusion, "probs": mean,
                "labels": labels}
