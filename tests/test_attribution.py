"""Attribution (Grad-CAM, Guided Grad-CAM), ablations and the interpretability callbacks.

Trained tests use tiny models on constructed data where the answer is known:

- ``cue="mel"``: the class is the *form* of one bright shape (a 2x8 "hum", an 8x2 "click",
  a 4x4 "blob") at a random place in a noisy log-Mel; the chroma is noise. The evidence is
  localised and is texture (local form), not layout.
- ``cue="chroma"``: the class is one bright pitch class; the log-Mel is noise.
"""
from __future__ import annotations

import copy
import csv
import glob
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from datamodules.segments import collate_batched
from lightning_modules import MODES, build_model
from lightning_modules.ablations import (
    bootstrap_ci,
    clip_accuracy,
    curve_auc,
    run_ablation,
    select_segments,
)
from lightning_modules.attribution import attribute
from lightning_modules.perturbations import (
    deletion_ranks,
    gaussian_smooth,
    shuffle_patches,
    zero_input,
)

LABELS = ["hum", "click", "blob"]
SHAPES = [(2, 8), (8, 2), (4, 4)]  # (bands, frames) of each class's bright shape
MEL_BINS, FRAMES = 32, 24
TINY = {"channels": [8, 16], "dropout": 0.0}
EXTRA = {"features": {"hop_length": 512, "n_mels": MEL_BINS, "f_min": 0.0, "f_max": None,
                      "mel_scale": "slaney"},
         "audio": {"sample_rate": 22050, "segment_seconds": FRAMES * 512 / 22050,
                   "segment_overlap": 0.5}}


class CueSegments:
    """A ``SegmentDataset`` look-alike (``clip_pos``, ``starts``, ``rows``, ``labels`` per
    clip, ``batch``) of ``clips_per_class`` clips x ``segments`` segments."""

    def __init__(self, clips_per_class: int, segments: int, seed: int, cue: str = "mel"):
        g = self.noise(len(LABELS), clips_per_class, segments, seed)
        n = len(self.clip_pos)
        self.boxes = np.zeros((n, 4), dtype=int)  # f0, f1, t0, t1 of the mel cue
        for i, k in enumerate(self.y.tolist()):
            if cue == "mel":
                h, w = SHAPES[k]
                f0 = int(torch.randint(0, MEL_BINS - h + 1, (1,), generator=g))
                t0 = int(torch.randint(0, FRAMES - w + 1, (1,), generator=g))
                self.mel[i, 0, f0:f0 + h, t0:t0 + w] += 25
                self.boxes[i] = (f0, f0 + h, t0, t0 + w)
            else:
                self.chroma[i, 0, 4 * k] += 0.7

    def noise(self, classes: int, clips_per_class: int, segments: int,
              seed: int) -> torch.Generator:
        """The clips, segments, labels and noise inputs; returns the generator, to draw
        the cues with."""
        g = torch.Generator().manual_seed(seed)
        n_clips = classes * clips_per_class
        self.labels = np.arange(classes).repeat(clips_per_class)
        self.rows = np.arange(n_clips)
        self.clip_pos = np.arange(n_clips).repeat(segments)
        self.starts = np.tile(np.arange(segments) * (FRAMES // 2), n_clips)
        n = len(self.clip_pos)
        self.y = torch.from_numpy(self.labels[self.clip_pos])
        self.mel = -60 + 8 * torch.randn(n, 1, MEL_BINS, FRAMES, generator=g)
        self.chroma = 0.3 * torch.rand(n, 1, 12, FRAMES, generator=g)
        return g

    def __len__(self):
        return len(self.clip_pos)

    def __getitem__(self, i):
        return {k: v[0] for k, v in self.batch([i]).items()}

    def __getitems__(self, idx):  # DataLoader's batched fetch, as SegmentDataset
        return self.batch(idx)

    def batch(self, idx):
        idx = np.asarray(idx, dtype=np.int64)
        t = torch.from_numpy(idx)
        return {"mel": self.mel[t].clone(), "chroma": self.chroma[t].clone(),
                "label": self.y[t], "clip": torch.from_numpy(self.clip_pos[idx])}

    def norm_stats(self):
        return {n: (x.mean(dim=(0, 1, 3)).numpy(), x.std(dim=(0, 1, 3)).numpy())
                for n, x in (("mel", self.mel), ("chroma", self.chroma))}


def tiny_model(mode: str, backbone: str = "serial_cnn", seed: int = 0, mel_bins: int = MEL_BINS):
    torch.manual_seed(seed)
    return build_model(mode, labels=LABELS, backbone=backbone, backbone_kwargs=TINY, tap=1,
                       head_dropout=0.0, inputs={"mel": mel_bins, "chroma": 12}, extra=EXTRA)


def train_tiny(mode: str, cue: str, steps: int = 80, backbone: str = "serial_cnn"):
    """(model in eval mode, validation CueSegments): a few Adam steps, about a second."""
    train, valid = CueSegments(8, 4, seed=0, cue=cue), CueSegments(4, 3, seed=1, cue=cue)
    return fit_tiny(tiny_model(mode, backbone), train, steps), valid


def fit_tiny(model, train, steps: int):
    """``model`` fitted on ``train`` (a ``CueSegments``-like set) with ``steps`` Adam steps
    on random batches of 32, normalised by its statistics; returned in eval mode."""
    model.set_normalization(train.norm_stats())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        b = train.batch(torch.randint(0, len(train), (32,), generator=g).numpy())
        loss = nn.functional.cross_entropy(model(b["mel"], b["chroma"]), b["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def mel_cue():
    return train_tiny("mid_two_way", "mel")


@pytest.fixture(scope="module")
def mel_only_cue():
    return train_tiny("mel_only", "mel")


@pytest.fixture(scope="module")
def chroma_cue():
    return train_tiny("late_fusion", "chroma")


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-example Spearman rank correlation of two [B, ...] maps."""
    def ranks(x):
        x = x.flatten(1).double()
        r = torch.empty_like(x)
        r.scatter_(1, x.argsort(dim=1), torch.arange(x.shape[1], dtype=x.dtype)
                   .expand_as(x).contiguous())
        return r - r.mean(dim=1, keepdim=True)
    ra, rb = ranks(a), ranks(b)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp(min=1e-12)


def bn_state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()
            if "running_" in k or "num_batches_tracked" in k}


# ------------------------------------------------------------------------ attribution
@pytest.mark.parametrize("mode", list(MODES))
def test_maps_match_each_branch_input_in_every_mode_under_inference_mode(mode):
    """Like a Lightning validation hook: inference mode, inference tensors as inputs, a
    model in training mode; maps come back on each branch's own grid, BN statistics,
    training flags and parameter gradients as they were."""
    for backbone in ("serial_cnn", "parallel_cnn"):
        model = tiny_model(mode, backbone, mel_bins=128).train()
        model.head[0].eval()  # a submodule's own flag must come back too
        before = bn_state(model)
        with torch.inference_mode():
            mel = -50 + 10 * torch.randn(3, 1, 128, 20)
            chroma = torch.rand(3, 1, 12, 20)
            res = attribute(model, {"mel": mel, "chroma": chroma, "label": torch.zeros(3)})
        grids = {"mel": (3, 128, 20), "chroma": (3, 12, 20)}
        assert set(res.maps) == set(MODES[mode].branch_names)
        for branch, per in res.maps.items():
            assert set(per) == {"gradcam", "guided_gradcam", "integrated_gradients"}
            cam = per["gradcam"]
            assert not cam.is_inference() and torch.isfinite(cam).all()
            assert cam.min() >= 0 and cam.amax(dim=(1, 2)).le(1 + 1e-6).all()
            for m in ("guided_gradcam", "integrated_gradients"):
                assert per[m].shape == cam.shape == grids[branch], (mode, backbone, branch, m)
                assert torch.isfinite(per[m]).all()
                assert per[m].abs().amax(dim=(1, 2)).le(1 + 1e-6).all()
        assert res.probs.shape == (3, 3) and res.target.tolist() == res.probs.argmax(1).tolist()
        after = bn_state(model)
        assert before.keys() == after.keys() and before
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert model.training and model.branches.training and not model.head[0].training
        assert all(p.grad is None for p in model.parameters())


def test_target_chunks_and_errors():
    model = tiny_model("late_fusion", mel_bins=128).eval()
    mel, chroma = -50 + 10 * torch.randn(5, 1, 128, 16), torch.rand(5, 1, 12, 16)
    whole = attribute(model, {"mel": mel, "chroma": chroma}, target=2)
    chunked = attribute(model, {"mel": mel, "chroma": chroma}, target=torch.full((5,), 2),
                        batch_size=2, methods=("gradcam",))
    assert whole.target.tolist() == [2] * 5
    torch.testing.assert_close(whole.maps["mel"]["gradcam"], chunked.maps["mel"]["gradcam"])
    assert set(chunked.maps["chroma"]) == {"gradcam"}
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribute(model, {"mel": mel, "chroma": chroma}, methods=("lime",))
    with pytest.raises(ValueError, match="missing \\['chroma'\\]"):
        attribute(model, {"mel": mel})
    mlp = build_model("late_fusion", labels=LABELS, backbone="mlp")
    with pytest.raises(ValueError, match="no convolution layer"):
        attribute(mlp, {"mel": mel, "chroma": chroma})
    # A single-branch mode needs only its own input.
    mel_only = tiny_model("mel_only", mel_bins=128).eval()
    assert set(attribute(mel_only, {"mel": mel}).maps) == {"mel"}


def test_gradcam_finds_the_cue_and_passes_the_randomisation_check(mel_only_cue):
    """Adebayo et al. 2018: maps of a trained model must change when its weights are
    re-initialised. Recomputing the trained maps gives rank correlation 1.

    (A mel_only model: with the chroma branch beside it, the tiny two-way model tends to
    call "blob" by the *absence* of the other two shapes, and its blob maps look elsewhere.)
    """
    model, valid = mel_only_cue
    b = valid.batch(np.arange(len(valid)))
    trained = attribute(model, b, target=b["label"])
    again = attribute(model, b, target=b["label"])
    # The model learned the localised cue: the Grad-CAM peak falls on (or next to) it.
    cam = trained.maps["mel"]["gradcam"]
    peak = cam.flatten(1).argmax(1)
    pf, pt = (peak // FRAMES).numpy(), (peak % FRAMES).numpy()
    f0, f1, t0, t1 = valid.boxes.T
    near = (pf >= f0 - 2) & (pf < f1 + 2) & (pt >= t0 - 2) & (pt < t1 + 2)
    for k in range(len(LABELS)):
        assert near[valid.y.numpy() == k].mean() >= 0.8, (LABELS[k], near)

    randomised = copy.deepcopy(model)
    torch.manual_seed(123)
    for m in randomised.modules():
        if m is not randomised and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    rand = attribute(randomised, b, target=b["label"])
    for branch in trained.maps:
        same = spearman(trained.maps[branch]["gradcam"], again.maps[branch]["gradcam"]).mean()
        other = spearman(trained.maps[branch]["gradcam"], rand.maps[branch]["gradcam"]).mean()
        assert float(same) > 0.999
        assert float(other) < 0.4, (branch, float(other))


# --------------------------------------------------------------------- perturbations
def test_zeroed_input_is_zero_after_normalisation(chroma_cue):
    model, valid = chroma_cue
    b = valid.batch(np.arange(4))
    for name in ("mel", "chroma"):
        z = zero_input(b[name], getattr(model, f"{name}_mean"))
        assert z.shape == b[name].shape
        assert model._prepare(name, z).abs().max() < 1e-5


def test_patch_shuffle_keeps_texture_and_moves_layout():
    x = torch.arange(2 * 20 * 26, dtype=torch.float).view(2, 1, 20, 26)
    g = torch.Generator().manual_seed(0)
    y = shuffle_patches(x, (4, 8), g)
    assert y.shape == x.shape
    # Same multiset of values (texture), different layout.
    assert torch.equal(x.flatten(1).sort(1).values, y.flatten(1).sort(1).values)
    assert not torch.equal(x, y)
    # Every 4x8 tile of the output is a whole tile of the input (content kept) ...
    tiles_in = {tuple(x[0, 0, i:i + 4, j:j + 8].flatten().tolist())
                for i in range(0, 20, 4) for j in range(0, 24, 8)}
    tiles_out = {tuple(y[0, 0, i:i + 4, j:j + 8].flatten().tolist())
                 for i in range(0, 20, 4) for j in range(0, 24, 8)}
    assert tiles_in == tiles_out
    # ... and the 2 frames past the last whole tile stay where they were.
    assert torch.equal(y[..., 24:], x[..., 24:])
    again = shuffle_patches(x, (4, 8), torch.Generator().manual_seed(0))
    assert torch.equal(y, again)  # seeded
    with pytest.raises(ValueError, match="fewer than 2 tiles"):
        shuffle_patches(x, (20, 26))


def test_gaussian_smoothing_removes_texture_keeps_level():
    g = torch.Generator().manual_seed(0)
    x = 5 + torch.randn(2, 1, 32, 40, generator=g)
    y = gaussian_smooth(x, 2.0)
    assert y.shape == x.shape
    assert float(y.std()) < 0.3 * float(x.std())
    assert abs(float(y.mean()) - float(x.mean())) < 0.05
    flat = torch.full((1, 1, 12, 10), 3.0)
    torch.testing.assert_close(gaussian_smooth(flat, (1.0, 3.0)), flat)
    assert torch.equal(gaussian_smooth(x, 0), x)


def test_deletion_ranks_put_the_top_scored_cells_first():
    scores = torch.zeros(1, 4, 5)
    scores[0, 1, 2], scores[0, 3, 4], scores[0, 0, 0] = 3.0, 2.0, 1.0
    ranks = deletion_ranks(scores, scores.shape, torch.Generator().manual_seed(0))
    assert sorted(ranks[0].tolist()) == list(range(20))
    assert ranks[0, 1 * 5 + 2] == 0 and ranks[0, 3 * 5 + 4] == 1 and ranks[0, 0] == 2
    rand = deletion_ranks(None, (3, 4, 5), torch.Generator().manual_seed(1))
    assert all(sorted(r.tolist()) == list(range(20)) for r in rand)
    assert curve_auc([0.0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert curve_auc([0.0, 0.1, 0.3], [1.0, 1.0, 0.0]) == pytest.approx((0.1 + 0.1) / 0.3)


def test_clip_accuracy_and_segment_selection():
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.45, 0.55], [0.2, 0.8]])
    labels, clips = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 5, 5])
    assert clip_accuracy(probs, labels, clips) == 1.0  # mean probabilities vote per clip
    clip_pos = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 4, 4])
    clip_labels = np.array([0, 0, 1, 1, 2])
    # Classes take turns (clip 0, 2, 4, then 1, 3); a clip that no longer fits is skipped.
    idx = select_segments(clip_pos, clip_labels, max_segments=6)
    assert sorted(set(clip_pos[idx].tolist())) == [0, 2] and len(idx) == 6
    idx = select_segments(clip_pos, clip_labels, max_segments=7)
    assert sorted(set(clip_pos[idx].tolist())) == [0, 2, 3] and len(idx) == 7
    assert len(select_segments(clip_pos, clip_labels, max_segments=1)) == 3  # >= one clip


# ------------------------------------------------------------------------- ablations
def test_ablation_on_a_chroma_only_cue(chroma_cue):
    model, valid = chroma_cue
    res = run_ablation(model, valid, smoothing_sigma=2.0, patch=(8, 8), max_segments=1000)
    r = res.results
    assert r["ablation/acc_clip"] >= 0.9
    assert r["ablation/acc_chroma_zeroed"] <= 0.5   # chance is 1/3
    # The Mel carries nothing. (Not exactly the clean accuracy: a Mel of band means is not
    # like the noise the model saw, and shifts its Mel features; across training seeds
    # this stays >= 0.75.)
    assert r["ablation/acc_mel_zeroed"] >= 0.7
    conditions = [row["condition"] for row in res.rows]
    assert conditions == ["clean", "mel_zeroed", "chroma_zeroed", "mel_smoothed",
                          "mel_shuffled"]


def test_ablation_on_a_localised_texture_cue(mel_cue):
    """The class is the local form of one shape: blurring it away (texture) kills accuracy,
    shuffling patch positions (layout) does not."""
    model, valid = mel_cue
    res = run_ablation(model, valid, smoothing_sigma=2.0, patch=(8, 8), max_segments=1000,
                       batch_size=16)
    r = res.results
    assert set(r) == {f"ablation/{k}" for k in (
        "acc_clip", "acc_mel_zeroed", "acc_chroma_zeroed", "acc_mel_smoothed",
        "acc_mel_shuffled")}
    assert r["ablation/acc_clip"] == pytest.approx(res.rows[0]["acc_clip"], abs=1e-6)
    assert r["ablation/acc_clip"] >= 0.9
    assert r["ablation/acc_mel_zeroed"] <= 0.5
    assert r["ablation/acc_mel_smoothed"] <= 0.7
    assert r["ablation/acc_mel_shuffled"] >= 0.8
    # Every figure has its 95 % bootstrap CI over clips, around it.
    for row in res.rows:
        assert row["acc_clip_ci_low"] <= row["acc_clip"] <= row["acc_clip_ci_high"], row
    # Deterministic: the same seed gives the same numbers.
    again = run_ablation(model, valid, smoothing_sigma=2.0, patch=(8, 8), max_segments=1000,
                         batch_size=16)
    assert again.results == r and again.intervals == res.intervals


def test_ablation_uses_every_clip_unless_capped_and_bootstraps_over_clips():
    clip_pos = np.repeat(np.arange(30), 4)
    assert len(select_segments(clip_pos, np.zeros(30, int), None)) == 120
    half = np.r_[np.ones(100), np.zeros(100)]
    lo, hi = bootstrap_ci(half)
    # binomial standard error sqrt(0.25 / 200) = 0.035: the CI is about +-0.07 wide
    assert 0.41 < lo < 0.45 and 0.55 < hi < 0.59
    assert bootstrap_ci(np.ones(20)) == (1.0, 1.0)


# ------------------------------------------------------------------------- callbacks
class CueDataModule(pl.LightningDataModule):
    """The parts of ``GenreDataModule`` the model and callbacks use: ``data_facts()``,
    ``labels``, ``datasets``, ``clips(split)``."""

    def __init__(self, cue: str = "mel"):
        super().__init__()
        self.labels = list(LABELS)
        self.datasets = {"train": CueSegments(4, 4, seed=0, cue=cue),
                         "valid": CueSegments(2, 3, seed=1, cue=cue),
                         "test": CueSegments(2, 3, seed=2, cue=cue)}
        self.norm_stats = self.datasets["train"].norm_stats()

    def clips(self, split):
        ds = self.datasets[split]
        return pd.DataFrame({"clip_id": [f"{split}.{LABELS[y]}.{i:03d}"
                                         for i, y in enumerate(ds.labels)],
                             "genre": [LABELS[y] for y in ds.labels], "label": ds.labels})

    def data_facts(self):
        from datamodules.datamodule import DataFacts

        return DataFacts(self.labels, {"mel": MEL_BINS, "chroma": 12}, self.norm_stats,
                         {"valid": len(self.datasets["valid"].labels)})

    def loader(self, split, shuffle=False):
        return DataLoader(self.datasets[split], batch_size=16, shuffle=shuffle,
                          collate_fn=collate_batched)

    def train_dataloader(self):
        return self.loader("train", shuffle=True)

    def val_dataloader(self):
        return self.loader("valid")


def _config(*overrides):
    from experiments.config import compose

    return compose(["data=synth", "model=mid_two_way", "trainer=cpu", *overrides])


def test_callbacks_are_built_from_the_config_and_follow_the_switches(tmp_path):
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    from experiments.builders import build_callbacks
    from lightning_modules.callbacks import (
        AblationCallback,
        GradCamCallback,
        InterpretabilityCallback,
    )

    cbs = build_callbacks(_config("callbacks.ablation.max_segments=7",
                                  "callbacks.gradcam.methods=[gradcam]",
                                  "callbacks.interpretability.label_epochs=0",
                                  "train.monitor=val/f1_macro"), tmp_path)
    assert [type(c) for c in cbs] == [ModelCheckpoint, ModelCheckpoint, EarlyStopping,
                                      LearningRateMonitor, GradCamCallback, AblationCallback,
                                      InterpretabilityCallback]
    ckpt, last, stop, _, gradcam, ablation, interp = cbs
    assert ckpt.dirpath == str(tmp_path / "checkpoints") and ckpt.monitor == "val/f1_macro"
    assert ckpt.filename == "best-epoch{epoch:03d}-score{val/f1_macro:.4f}"
    assert ckpt.mode == "max" and stop.monitor == "val/f1_macro"
    assert last.monitor is None and last.filename == "last" and last.dirpath == ckpt.dirpath
    assert stop.patience == 8
    assert gradcam.methods == ("gradcam",) and gradcam.out_dir == tmp_path / "figures" / "gradcam"
    assert ablation.max_segments == 7 and ablation.patch == (16, 16)
    assert ablation.csv_path == tmp_path / "ablation.csv" and ablation.batch_size == 64
    assert interp.csv_path == tmp_path / "interpretability.csv" and interp.label_epochs == 0
    assert interp.methods == ("gradcam", "guided_gradcam", "integrated_gradients")
    assert interp.severity["sigmas"] == (0.5, 1.0, 2.0, 4.0)
    off = _config("callbacks.gradcam.enabled=false", "callbacks.ablation.enabled=false",
                  "callbacks.interpretability.enabled=false",
                  "callbacks.early_stopping.enabled=false")
    assert [type(c) for c in build_callbacks(off, tmp_path)] == [ModelCheckpoint,
                                                                 ModelCheckpoint,
                                                                 LearningRateMonitor]
    with pytest.raises(ValueError, match="choose from"):
        build_callbacks(_config("callbacks.gradcam.methods=[occlusion]"), tmp_path)


def test_callbacks_write_figures_csv_and_wandb_media_in_a_tiny_fit(tmp_path):
    import wandb
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import WandbLogger

    from experiments.builders import build_callbacks

    pl.seed_everything(0, verbose=False)
    run_dir = tmp_path / "run"
    cfg = _config("callbacks.gradcam.every_n_epochs=1", "callbacks.ablation.max_segments=12",
                  "callbacks.ablation.patch=[8,8]", "callbacks.interpretability.max_segments=12",
                  "callbacks.interpretability.sanity_segments=6",
                  "callbacks.interpretability.label_epochs=1",
                  "callbacks.interpretability.fractions=[0.0,0.3,1.0]",
                  "callbacks.interpretability.severity.sigmas=[1.0,4.0]",
                  "callbacks.interpretability.severity.fractions=[0.5]",
                  "callbacks.interpretability.severity.time_tile=4",
                  "callbacks.interpretability.severity.tile=4")
    gradcam_cb, ablation_cb, interp_cb = build_callbacks(cfg, run_dir)[-3:]
    dm = CueDataModule()
    model = tiny_model("mid_two_way")  # normalisation comes from dm.data_facts() in setup
    logger = WandbLogger(project="mlfi-test", save_dir=str(run_dir), offline=True, name="t")
    ckpt = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), monitor="val/acc_clip",
                           mode="max")
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=logger,
                         callbacks=[ckpt, gradcam_cb, ablation_cb, interp_cb],
                         num_sanity_val_steps=1,
                         enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=1)
    bn_before_end = {}

    class _Spy(pl.Callback):  # BN statistics when the interpretability callbacks start
        def on_fit_end(self, trainer, pl_module):
            bn_before_end.update(bn_state(pl_module))

    trainer.callbacks.insert(0, _Spy())
    trainer.fit(model, datamodule=dm)
    wandb.finish()

    # Grad-CAM: 3 classes x 1 clip, after each of 2 epochs (not the sanity check) + final.
    figs = sorted(p.name for p in (run_dir / "figures" / "gradcam").glob("*.png"))
    assert len(figs) == 9, figs
    assert sum(f.startswith("epoch000_") for f in figs) == 3
    assert sum(f.startswith("final_valid.") for f in figs) == 3
    assert all(p.stat().st_size > 10_000 for p in (run_dir / "figures" / "gradcam").iterdir())
    # The callbacks did not touch the trained model's BN statistics.
    assert all(torch.equal(v, bn_state(model)[k]) for k, v in bn_before_end.items())

    rows = list(csv.DictReader(open(run_dir / "ablation.csv")))
    conds = [r["condition"] for r in rows]
    assert conds == ["clean", "mel_zeroed", "chroma_zeroed", "mel_smoothed", "mel_shuffled"]
    assert all(r["weights"].startswith("best") for r in rows)
    # The final overlays show the model the test split and the ablations score.
    assert gradcam_cb.final_weights == rows[0]["weights"] == \
        f"best ({Path(ckpt.best_model_path).name})"
    assert int(rows[0]["segments"]) <= 12 and int(rows[0]["clips"]) == 4
    assert float(rows[0]["acc_clip_ci_low"]) <= float(rows[0]["acc_clip"]) \
        <= float(rows[0]["acc_clip_ci_high"])
    assert (run_dir / "figures" / "ablation.png").stat().st_size > 10_000
    r = ablation_cb.summary
    assert len(r) == 5
    by_cond = {row["condition"]: float(row["acc_clip"]) for row in rows}
    for cond in ("mel_zeroed", "chroma_zeroed", "mel_smoothed", "mel_shuffled"):
        assert r[f"ablation/acc_{cond}"] == pytest.approx(by_cond[cond], abs=1e-6)
    assert r["ablation/acc_clip"] == pytest.approx(by_cond["clean"], abs=1e-6)

    # interpretability.csv: faithfulness against each baseline, sanity checks per method,
    # texture/shape points; every section for both branches.
    interp = list(csv.DictReader(open(run_dir / "interpretability.csv")))
    sections = {(r["section"], r["branch"]) for r in interp}
    for sec in ("deletion", "insertion", "sanity_cascading", "sanity_labels", "sanity",
                "texture_shape"):
        assert {(sec, "mel"), (sec, "chroma")} <= sections, sec
    methods = {r["method"] for r in interp if r["section"] == "sanity"}
    assert methods == {"gradcam", "guided_gradcam", "integrated_gradients"}
    diffs = {r["metric"] for r in interp if r["metric"].startswith("prob_auc_minus")}
    assert diffs == {f"prob_auc_minus_{b}" for b in ("shifted", "random_blobs",
                                                     "randomised_model")}
    assert any(r["metric"] == "permuted_label_acc" for r in interp)
    for name in ("faithfulness", "texture_shape"):
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 10_000
    assert "interpretability/deletion_prob_auc_gradcam_mel" in interp_cb.summary

    runs = glob.glob(str(run_dir / "wandb" / "offline-run-*"))
    assert len(runs) == 1
    media = f"{runs[0]}/files/media"
    images = glob.glob(f"{media}/images/**/*.png", recursive=True)
    assert len(images) >= 9 + 1 + 2, images
    tables = [json.load(open(t)) for t in
              glob.glob(f"{media}/table/**/*.table.json", recursive=True)]
    by_first = {t["columns"][0]: t for t in tables}
    assert len(by_first["condition"]["data"]) == len(rows)
    assert len(by_first["section"]["data"]) == len(interp)
