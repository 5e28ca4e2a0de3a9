"""The shared LightningModule: branches, normalisation, head, loss, metrics, voting,
optimiser and logging. A mode class (``modes.py``) only declares its wiring:

- ``mode``: the registry name (stored in the checkpoint's hyperparameters),
- ``branch_names``: the input features that get a branch (``"mel"``, ``"chroma"``),
- ``receives``: receiver branch -> donor branch; the donor's features after stage ``tap``
  are joined (``fusion.Join``, kind ``join``) onto the receiver's, which feeds its stage
  ``tap + 1``.

Every used branch feeds the head: global average + max pooling per branch, concatenated,
dropout, one Linear layer.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.backbones import (
    BACKBONES,
    StagedBackbone,
    backbone_input_kind,
    build_backbone,
)
from lightning_modules.fusion import JOINS, Join, film_hidden
from lightning_modules.metrics import ClipVoting

FEATURES = ("mel", "chroma")
PITCH_INPUTS = ("chroma",)  # inputs whose rows are pitch classes (circular: B neighbours C)
DEFAULT_INPUTS = {"mel": 128, "chroma": 12}
SCHEDULERS = ("cosine", "none")
# The datamodule's split name behind each evaluation stage.
_STAGE_SPLIT = {"val": "valid", "test": "test"}


@dataclass
class ClipResults:
    """One evaluation epoch at clip level (numpy): ``confusion`` [C, C] (rows = true class),
    ``probs`` [n_clips, C] mean segment probabilities (NaN rows for clips never seen),
    ``labels`` [n_clips] (-1 for clips never seen), ``acc`` and ``f1_macro``."""

    confusion: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    acc: float
    f1_macro: float


class DataMismatchError(ValueError):
    """The data's labels or input bins are not the ones the model was built for."""


@runtime_checkable
class DataFactsSource(Protocol):
    """A datamodule that tells the model its labels, input bins, normalisation statistics
    and clip counts (``datamodules.datamodule.GenreDataModule.data_facts``)."""

    def data_facts(self): ...


class GlobalAvgMaxPool(nn.Module):
    """[B, C, F, T] -> [B, 2C] (mean and max over F and T); [B, C] vectors pass through."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return x
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


class GenreClassifier(pl.LightningModule):
    """Shared base of the interaction modes; build a mode class, not this one.

    Args:
        labels: class names; ``len(labels)`` outputs.
        backbone: registry name (``backbones.BACKBONES``).
        backbone_kwargs: builder options shared by both branches (e.g. ``channels``,
            ``dropout``); ``mel_backbone_kwargs`` / ``chroma_backbone_kwargs`` override
            them per branch. CNN builders get ``input_freq`` from ``inputs`` unless given.
        tap: join after this stage (1-based, ``1 .. num_stages - 1``); used by the mid
            modes only, ignored by the others.
        inputs: feature name -> frequency bins (the normalisation buffers' size; for the
            ``mlp`` backbone also the vector size).
        head_dropout: dropout before the classifier layer.
        lr, weight_decay: AdamW (no weight decay on biases and norm parameters).
        scheduler: ``"cosine"`` (per step, after ``warmup_epochs`` of linear warm-up) or
            ``"none"``.
        label_smoothing: training loss only; val/test loss is plain cross-entropy.
        mixup_alpha: mixup on training batches (Beta(alpha, alpha)) when > 0.
        upsample: how a donor map grows onto a larger receiver grid (``nearest`` or
            ``bilinear``); shrinking is adaptive average pooling.
        join: how the mid modes join the donor into the receiver (``fusion.JOINS``):
            ``concat`` (resize and concatenate), ``broadcast`` (frequency-averaged donor
            on every receiver row) or ``film`` (donor predicts scale and shift); the same
            parameter count within 5 %.
        extra: free-form metadata kept in the checkpoint (feature parameters, segments).

    Inputs: ``forward(mel [B, 1, 128, T], chroma [B, 1, 12, T]) -> logits [B, C]``,
    un-normalised; normalisation by the ``{name}_mean`` / ``{name}_std`` buffers
    ([1, 1, F, 1]) happens inside. With the ``mlp`` backbone an input may be a vector
    [B, F] or a map [B, 1, F, T], which is normalised and averaged over time.
    """

    mode: str = ""
    branch_names: tuple[str, ...] = ()
    receives: Mapping[str, str] = {}

    def __init__(
        self,
        labels: list[str],
        backbone: str = "parallel_cnn",
        backbone_kwargs: dict | None = None,
        mel_backbone_kwargs: dict | None = None,
        chroma_backbone_kwargs: dict | None = None,
        tap: int = 2,
        inputs: dict[str, int] | None = None,
        head_dropout: float = 0.3,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        scheduler: str = "cosine",
        warmup_epochs: float = 1,
        label_smoothing: float = 0.1,
        mixup_alpha: float = 0.0,
        upsample: str = "nearest",
        join: str = "concat",
        extra: dict | None = None,
    ):
        init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        if not type(self).mode:
            raise TypeError("GenreClassifier is the shared base; build a mode class instead "
                            "(lightning_modules.build_model(mode, ...), modes: see MODES)")
        labels = [str(x) for x in labels]
        if len(labels) < 2:
            raise ValueError(f"labels: need at least 2 classes, got {labels}")
        inputs = dict(DEFAULT_INPUTS if inputs is None else inputs)
        unknown = sorted(set(inputs) - set(FEATURES))
        missing = [n for n in self.branch_names if n not in inputs]
        if unknown or missing:
            raise ValueError(f"inputs={inputs}: names must be among {FEATURES} and include "
                             f"{list(self.branch_names)} (mode {self.mode!r})")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler={scheduler!r}: expected one of {SCHEDULERS}")
        if join not in JOINS:
            raise ValueError(f"model.join={join!r}: expected one of {', '.join(JOINS)}")
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; registered backbones: "
                             f"{', '.join(sorted(BACKBONES))}")
        init_args.update(labels=labels, inputs=inputs)
        # "mode" is not an __init__ argument: load_model reads it to pick the class, and
        # load_from_checkpoint drops it (it filters hyperparameters by the signature).
        # logger=False: loggers get the run config once, when the entry point builds them.
        self.save_hyperparameters({"mode": self.mode, **init_args}, logger=False)

        self.labels = labels
        self.num_classes = len(labels)
        self.inputs = inputs
        self.tap = int(tap)
        for name, bins in inputs.items():
            self.register_buffer(f"{name}_mean", torch.zeros(1, 1, int(bins), 1))
            self.register_buffer(f"{name}_std", torch.ones(1, 1, int(bins), 1))

        self.joins = nn.ModuleDict()
        self.branches = nn.ModuleDict(self._build_branches())
        self.pool = GlobalAvgMaxPool()
        head_in = sum(b.out_channels[-1] * (2 if b.input_kind == "map" else 1)
                      for b in self.branches.values())
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(head_in, self.num_classes))

        self.train_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self.val_acc_segment = MulticlassAccuracy(self.num_classes, average="micro")
        self.test_acc_segment = MulticlassAccuracy(self.num_classes, average="micro")
        # Replaced by fixed-size voters in setup() when the datamodule knows num_clips.
        self.val_voting = ClipVoting(self.num_classes)
        self.test_voting = ClipVoting(self.num_classes)
        self.val_acc_clip_best = MaxMetric()

        # The latest val/test epoch at clip level, by stage: what reports and evaluate read.
        self.clip_results: dict[str, ClipResults] = {}

    # ----------------------------------------------------------------- construction
    def _branch_kwargs(self, name: str) -> dict[str, Any]:
        hp = self.hparams
        kw = {**(hp.backbone_kwargs or {}), **(hp.get(f"{name}_backbone_kwargs") or {})}
        params = inspect.signature(BACKBONES[hp.backbone]).parameters
        if "input_freq" in params and "input_freq" not in kw:
            kw["input_freq"] = self.inputs[name]
        return kw

    def _in_channels(self, name: str) -> int:
        # CNNs read [B, 1, F, T] maps; vector backbones read [B, F].
        vector = backbone_input_kind(self.hparams.backbone) == "vector"
        return self.inputs[name] if vector else 1

    def _build_branches(self) -> dict[str, StagedBackbone]:
        name_bb = self.hparams.backbone
        plain = {n: build_backbone(name_bb, self._in_channels(n),
                                   **self._branch_kwargs(n)) for n in self.branch_names}
        if not self.receives:
            return plain
        involved = sorted(set(self.receives) | set(self.receives.values()))
        hi = min([plain[r].num_stages - 1 for r in self.receives]
                 + [plain[d].num_stages for d in self.receives.values()])
        if not 1 <= self.tap <= hi:
            stages = ", ".join(f"{n} branch {plain[n].num_stages} stages" for n in involved)
            raise ValueError(
                f"tap={self.tap} is impossible for mode {self.mode!r} with backbone "
                f"{name_bb!r} ({stages}): valid taps are 1..{hi}")
        out = dict(plain)
        kind, upsample = self.hparams.join, self.hparams.upsample
        for receiver, donor in self.receives.items():
            extra_ch = plain[donor].out_channels[self.tap - 1]
            widened = build_backbone(name_bb, self._in_channels(receiver),
                                     widen={self.tap + 1: extra_ch},
                                     **self._branch_kwargs(receiver))
            if kind == "film" and plain[receiver].input_kind == "map":
                budget = (sum(p.numel() for p in widened.parameters())
                          - sum(p.numel() for p in plain[receiver].parameters()))
                c1 = plain[receiver].out_channels[self.tap - 1]
                self.joins[receiver] = Join(upsample, "film", c1, extra_ch,
                                            film_hidden(budget, c1, extra_ch))
            else:
                # Vectors (the mlp backbone) are concatenated by every join.
                self.joins[receiver] = Join(upsample, "concat" if kind == "film" else kind)
                out[receiver] = widened
        return out

    # ------------------------------------------------------------------ normalisation
    @torch.no_grad()
    def set_normalization(self, stats: Mapping[str, tuple[Any, Any]]) -> None:
        """Set per-band statistics from the training split:
        ``{"mel": (mean [F], std [F]), "chroma": (...)}`` (tensors, arrays or lists).
        Stds are floored at 1e-6."""
        for name, (mean, std) in stats.items():
            if name not in self.inputs:
                raise ValueError(f"set_normalization: unknown input {name!r}; this model's "
                                 f"inputs are {list(self.inputs)}")
            buf_mean, buf_std = getattr(self, f"{name}_mean"), getattr(self, f"{name}_std")
            mean = torch.as_tensor(np.asarray(mean), dtype=buf_mean.dtype).reshape(-1)
            std = torch.as_tensor(np.asarray(std), dtype=buf_std.dtype).reshape(-1)
            bins = buf_mean.shape[2]
            if mean.numel() != bins or std.numel() != bins:
                raise ValueError(f"set_normalization: {name} statistics must have {bins} values "
                                 f"(inputs[{name!r}]), got mean {mean.numel()}, std {std.numel()}")
            buf_mean.copy_(mean.view(1, 1, -1, 1))
            buf_std.copy_(std.clamp(min=1e-6).view(1, 1, -1, 1))

    def _prepare(self, name: str, x: torch.Tensor | None) -> torch.Tensor:
        """Normalise one input; vector backbones get [B, F] (maps averaged over time)."""
        if x is None:
            raise ValueError(f"mode {self.mode!r} needs the {name!r} input, got None")
        mean, std = getattr(self, f"{name}_mean"), getattr(self, f"{name}_std")
        bins = mean.shape[2]
        vector = self.branches[name].input_kind == "vector"
        if x.dim() == 4 and x.shape[1] == 1 and x.shape[2] == bins:
            x = (x - mean) / std
            return x.mean(dim=3).flatten(1) if vector else x
        if vector and x.dim() == 2 and x.shape[1] == bins:
            return (x - mean.view(1, -1)) / std.view(1, -1)
        want = f"[B, 1, {bins}, T]" + (f" or [B, {bins}]" if vector else "")
        raise ValueError(f"{name} input has shape {tuple(x.shape)}; this model expects {want} "
                         f"(inputs[{name!r}]={bins})")

    # ------------------------------------------------------------------------ forward
    def branch_features(self, mel: torch.Tensor | None = None,
                        chroma: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Each used branch's last-stage output (after the mode's joins), by name."""
        given = {"mel": mel, "chroma": chroma}
        x = {n: self._prepare(n, given[n]) for n in self.branch_names}
        if not self.receives:
            return {n: self.branches[n](x[n]) for n in self.branch_names}
        taps = {n: self.branches[n].run_stages(x[n], 0, self.tap) for n in self.branch_names}
        out = {}
        for n in self.branch_names:
            h = taps[n]
            if n in self.receives:
                h = self.joins[n](h, taps[self.receives[n]])
            out[n] = self.branches[n].run_stages(h, self.tap)
        return out

    def forward(self, mel: torch.Tensor | None = None,
                chroma: torch.Tensor | None = None) -> torch.Tensor:
        """Un-normalised ``mel`` [B, 1, F_mel, T] and ``chroma`` [B, 1, F_chroma, T] ->
        logits [B, num_classes]. Single-branch modes ignore the other input."""
        feats = self.branch_features(mel, chroma)
        pooled = torch.cat([self.pool(feats[n]) for n in self.branch_names], dim=1)
        return self.head(pooled)

    @torch.no_grad()
    def segment_probs(self, inputs: Mapping[str, torch.Tensor],
                      batch_size: int = 64) -> torch.Tensor:
        """Class probabilities [N, C] (float32, on the CPU) of N segments given as
        ``{name: [N, 1, F, T]}`` (extra names are ignored), computed in batches of
        ``batch_size`` on the model's device. Train/eval mode is the caller's choice."""
        dev = next(self.parameters()).device
        n = next(iter(inputs.values())).shape[0]
        out = []
        for i in range(0, n, int(batch_size)):
            b = {k: v[i:i + int(batch_size)].to(dev) for k, v in inputs.items()
                 if k in self.branch_names}
            out.append(self(**b).float().softmax(dim=1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.num_classes)

    def branch_last_conv(self, name: str) -> nn.Module:
        """The module whose output Grad-CAM reads for branch ``name``."""
        if name not in self.branches:
            raise ValueError(f"mode {self.mode!r} has no {name!r} branch; its branches: "
                             f"{list(self.branches)}")
        layer = self.branches[name].last_conv
        if layer is None:
            raise ValueError(f"backbone {self.hparams.backbone!r} has no convolution layer for "
                             f"Grad-CAM (branch {name!r})")
        return layer

    def branch_attribution_layer(self, name: str) -> nn.Module:
        """The module whose output Grad-CAM reads for branch ``name``: the last convolution,
        except for the chroma branch, read at the deepest convolution that still has all
        of its pitch-class rows (``full_resolution_conv``), so that its maps keep pitch-class
        resolution instead of interpolating 3 pooled rows over 12."""
        layer = self.branch_last_conv(name)
        if name in PITCH_INPUTS:
            return getattr(self.branches[name], "full_resolution_conv", layer)
        return layer

    # ------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        """Take what the model needs from a datamodule's :class:`DataFactsSource`: check
        labels and input bins, adopt the training split's normalisation statistics when
        fitting (a checkpoint being resumed restores its own afterwards), and size the clip
        voters from the clip counts (sum states, exact under DDP). Without such a datamodule
        the voters keep per-segment rows (concatenated across ranks)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if not isinstance(dm, DataFactsSource):
            return
        facts = dm.data_facts()
        if list(facts.labels) != list(self.labels):
            raise DataMismatchError(
                f"the data's labels {list(facts.labels)} differ from the model's "
                f"{list(self.labels)}: use the dataset (and data.* settings) the model was "
                f"trained with")
        bins = {n: int(b) for n, b in facts.input_bins.items() if n in self.inputs}
        if bins != {n: int(b) for n, b in self.inputs.items() if n in bins}:
            raise DataMismatchError(
                f"the data's frequency bins {bins} differ from the model's inputs "
                f"{self.inputs}: use the features.* settings it was trained with")
        if stage == "fit" and facts.norm_stats:
            self.set_normalization({n: v for n, v in facts.norm_stats.items()
                                    if n in self.inputs})
        for stage_name, split in _STAGE_SPLIT.items():
            if split in facts.num_clips:
                setattr(self, f"{stage_name}_voting",
                        ClipVoting(self.num_classes, num_clips=facts.num_clips[split]))

    # ------------------------------------------------------------------------- steps
    @staticmethod
    def _inputs(batch: Mapping[str, torch.Tensor]):
        return batch.get("mel"), batch.get("chroma")

    def training_step(self, batch, batch_idx):
        mel, chroma = self._inputs(batch)
        y = batch["label"]
        smooth = self.hparams.label_smoothing
        alpha = self.hparams.mixup_alpha
        if alpha > 0:
            lam = float(torch.distributions.Beta(alpha, alpha).sample())
            perm = torch.randperm(y.shape[0], device=y.device)
            # Normalisation is affine per band, so mixing raw inputs equals mixing
            # normalised ones.
            mel = None if mel is None else lam * mel + (1 - lam) * mel[perm]
            chroma = None if chroma is None else lam * chroma + (1 - lam) * chroma[perm]
            logits = self(mel, chroma)
            loss = lam * F.cross_entropy(logits, y, label_smoothing=smooth) + \
                (1 - lam) * F.cross_entropy(logits, y[perm], label_smoothing=smooth)
        else:
            logits = self(mel, chroma)
            loss = F.cross_entropy(logits, y, label_smoothing=smooth)
        self.train_acc.update(logits.detach(), y)
        bs = y.shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=bs, sync_dist=True)
        self.log("train/acc_segment", self.train_acc, on_step=False, on_epoch=True,
                 batch_size=bs)
        return loss

    def _eval_step(self, stage: str, batch) -> torch.Tensor:
        mel, chroma = self._inputs(batch)
        y = batch["label"]
        logits = self(mel, chroma)
        loss = F.cross_entropy(logits, y)
        probs = logits.softmax(dim=1)
        acc = getattr(self, f"{stage}_acc_segment")
        acc.update(probs, y)
        getattr(self, f"{stage}_voting").update(probs, y, batch["clip"])
        bs = y.shape[0]
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage == "val",
                 batch_size=bs, sync_dist=True)
        self.log(f"{stage}/acc_segment", acc, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def validation_step(self, batch, batch_idx):
        return self._eval_step("val", batch)

    def test_step(self, batch, batch_idx):
        return self._eval_step("test", batch)

    def _clip_epoch_end(self, stage: str) -> dict[str, torch.Tensor] | None:
        voting: ClipVoting = getattr(self, f"{stage}_voting")
        if not voting.update_called:
            return None
        res = voting.compute()  # synchronised across ranks
        voting.reset()
        self.log(f"{stage}/acc_clip", res["acc"], prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/f1_macro", res["f1_macro"], sync_dist=True)
        self.clip_results[stage] = ClipResults(
            res["confusion"].cpu().numpy(), res["probs"].cpu().numpy(),
            res["labels"].cpu().numpy(), float(res["acc"]), float(res["f1_macro"]))
        return res

    def on_train_start(self) -> None:
        # The sanity check ran validation steps; drop what they accumulated.
        self.val_acc_segment.reset()
        self.val_voting.reset()
        self.val_acc_clip_best.reset()

    def on_validation_epoch_end(self) -> None:
        res = self._clip_epoch_end("val")
        if res is None or self.trainer.sanity_checking or torch.isnan(res["acc"]):
            return
        self.val_acc_clip_best.update(res["acc"])
        self.log("val/acc_clip_best", self.val_acc_clip_best.compute(), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self._clip_epoch_end("test")

    # --------------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        hp = self.hparams
        decay = [p for p in self.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.ndim <= 1]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr)
        if hp.scheduler == "none":
            return opt
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("scheduler='cosine' needs a finite training length: set "
                             "trainer.max_epochs or trainer.max_steps, or model.scheduler=none")
        total = max(1, int(total))
        warmup = 0
        if hp.warmup_epochs > 0:
            batches = self.trainer.num_training_batches
            if not math.isfinite(batches):  # max_epochs=-1 with max_steps: data not loaded yet
                self.trainer.fit_loop.setup_data()
                batches = self.trainer.num_training_batches
            if not math.isfinite(batches):
                raise ValueError("warmup_epochs > 0 needs a train dataloader with a length; "
                                 "set model.warmup_epochs=0")
            steps_per_epoch = max(1, math.ceil(batches / self.trainer.accumulate_grad_batches))
            warmup = min(total - 1, int(round(hp.warmup_epochs * steps_per_epoch)))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
