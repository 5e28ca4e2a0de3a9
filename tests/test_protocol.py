"""Promises of the evaluation protocol, pinned by behaviour: the test split is scored once
with the best-on-validation checkpoint; augmentation touches training batches only;
Grad-CAM reads the last convolutional map of every backbone."""
from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from datamodules.datamodule import GenreDataModule
from experiments.builders import build_model
from experiments.config import compose
from lightning_modules import BACKBONES, backbone_input_kind
from lightning_modules import build_model as build_mode
from tests.conftest import TINY_GTZAN_RUN, call_cli, last_json, make_gtzan

TINY = [*TINY_GTZAN_RUN, "callbacks.gradcam.enabled=false", "callbacks.ablation.enabled=false",
        "callbacks.interpretability.enabled=false", "logger.wandb.enabled=false"]


@pytest.fixture(scope="module")
def gtzan_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("gtzan")
    make_gtzan(root, per_genre=4, seconds=6.0)
    return root


def test_the_test_split_is_scored_with_the_best_checkpoint_not_the_last(gtzan_root, tmp_path):
    # val/acc_clip_best never decreases, so "best" under mode=min is epoch 0, strictly before
    # the last epoch: the two checkpoints differ and the test figures must be the best one's.
    env = {"MLFI_OUTPUT_DIR": str(tmp_path)}
    r = call_cli("experiments.train", *TINY, f"data.root={gtzan_root}", "model=late_fusion",
                 "trainer.max_epochs=3", "train.monitor=val/acc_clip_best",
                 "train.monitor_mode=min", "callbacks.early_stopping.enabled=false", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    s = last_json(r.stdout)
    best, last = Path(s["checkpoint"]), Path(s["run_dir"]) / "checkpoints" / "last.ckpt"
    assert best.name.startswith("best-epoch000-") and s["epochs"] == 3
    assert torch.load(last, weights_only=False)["epoch"] == 2

    def scored(ckpt):
        e = call_cli("experiments.evaluate", f"checkpoint={ckpt}", env=env)
        assert e.returncode == 0, e.stderr[-2000:]
        return last_json(e.stdout)

    of_best, of_last = scored(best), scored(last)
    assert of_best["test/loss"] != pytest.approx(of_last["test/loss"], abs=1e-6)
    for k in ("test/loss", "test/acc_clip", "test/acc_segment", "test/f1_macro"):
        assert s[k] == pytest.approx(of_best[k], abs=1e-6), k


class _Batches(pl.Callback):
    """Every batch each loop hands to the model's step, after the datamodule's transfer
    hooks (where augmentation happens)."""

    def __init__(self):
        self.seen = {"train": [], "valid": [], "test": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen["train"].append({k: v.clone() for k, v in batch.items()})

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0):
        self.seen["valid"].append({k: v.clone() for k, v in batch.items()})

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0):
        self.seen["test"].append({k: v.clone() for k, v in batch.items()})


def _masked_frames(x: torch.Tensor, mean) -> int:
    """Frames of [B, 1, F, T] whose every band equals its training mean (a time mask)."""
    m = torch.as_tensor(mean, dtype=x.dtype).view(1, 1, -1, 1)
    return int((x == m).all(dim=2).sum())


@pytest.mark.parametrize("mode", ["mid_two_way", "mel_only"])
def test_spec_augment_changes_training_batches_only(gtzan_root, mode):
    cfg = compose([*TINY, f"data.root={gtzan_root}", f"model={mode}",
                   "data.spec_augment.enabled=true", "data.spec_augment.time_width=0.3"])
    pl.seed_everything(0, verbose=False)
    dm = GenreDataModule(cfg)
    model = build_model(cfg, dm)
    spy = _Batches()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[spy])
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    mean = dm.norm_stats["mel"][0]
    assert sum(_masked_frames(b["mel"], mean) for b in spy.seen["train"]) > 0
    for split in ("valid", "test"):
        raw = [dm.datasets[split].batch(range(i, min(i + 16, len(dm.datasets[split]))))
               for i in range(0, len(dm.datasets[split]), 16)]
        assert len(spy.seen[split]) == len(raw) > 0
        for got, want in zip(spy.seen[split], raw):
            for name in ("mel", "chroma", "label", "clip"):
                assert torch.equal(got[name], want[name]), (split, name)


MAP_BACKBONES = [(name, kw) for name in sorted(BACKBONES) if backbone_input_kind(name) == "map"
                 for kw in ([{}, {"merge": False}] if name == "parallel_cnn" else [{}])]


@pytest.mark.parametrize("mode", ["late_fusion", "mid_two_way"])
@pytest.mark.parametrize("backbone,extra", MAP_BACKBONES,
                         ids=[f"{n}{'-nomerge' if kw else ''}" for n, kw in MAP_BACKBONES])
def test_gradcam_reads_the_last_convolutional_map_of_every_backbone(backbone, extra, mode):
    torch.manual_seed(0)
    model = build_mode(mode, labels=["a", "b", "c"], backbone=backbone, tap=1,
                       backbone_kwargs={"channels": [4, 6, 8, 10], **extra},
                       inputs={"mel": 64, "chroma": 12}).eval()
    x = {"mel": torch.randn(2, 1, 64, 40), "chroma": torch.rand(2, 1, 12, 40)}
    for name in ("mel", "chroma"):
        branch = model.branches[name]
        seen = {}

        def on_cam_layer(module, inputs, output):
            seen.setdefault("cam_layer", output.shape)

        def on_last_stage(module, inputs):
            seen.setdefault("last_stage_in", inputs[0].shape)

        hooks = [model.branch_last_conv(name).register_forward_hook(on_cam_layer),
                 branch.stages[-1].register_forward_pre_hook(on_last_stage)]
        with torch.no_grad():
            model(**x)
        for h in hooks:
            h.remove()
        # The last stage's conv map: the last stage's channels, at the spatial size that
        # enters the last stage (its convolutions keep the size; pooling comes after).
        assert seen["cam_layer"][1] == branch.out_channels[-1], (name, seen)
        assert seen["cam_layer"][2:] == seen["last_stage_in"][2:], (name, seen)
        assert seen["cam_layer"][2:] != x[name].shape[2:]  # not the first stage's map


def test_a_seed_fixes_the_figures_and_a_finished_run_is_not_trained_again(
        gtzan_root, tmp_path):
    env = {"MLFI_OUTPUT_DIR": str(tmp_path)}
    args = [*TINY, f"data.root={gtzan_root}", "model=late_fusion", "trainer.max_epochs=1"]
    first = call_cli("experiments.train", *args, "seed=1", "train.resume=auto", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    a = last_json(first.stdout)
    again = call_cli("experiments.train", *args, "seed=1", "train.resume=auto", env=env)
    assert "run already complete" in again.stderr and last_json(again.stdout) == a
    b = last_json(call_cli("experiments.train", *args, "seed=1", env=env).stdout)
    assert b["run_dir"] == a["run_dir"] + "-2"  # a new directory, not the finished one
    c = last_json(call_cli("experiments.train", *args, "seed=2", env=env).stdout)
    for k in ("test/loss", "test/acc_segment", "val/acc_clip"):
        assert b[k] == a[k], k  # the same seed: the same numbers
    assert c["test/loss"] != a["test/loss"]


class InitProbe(pl.Callback):
    """Writes the sum of the model's weights when fitting starts (the initialisation)."""

    def __init__(self, out: str):
        self.out = Path(out)

    def on_fit_start(self, trainer, pl_module):
        with torch.no_grad():
            total = sum(float(p.double().sum()) for p in pl_module.parameters())
        self.out.write_text(repr(total))


def test_the_seed_sets_the_initial_weights(gtzan_root, tmp_path):
    # Seeds are repetitions: each must start from its own initialisation, and the same seed
    # from the same one. The probe is a callback given as config data (_target_).
    def init(seed: int, name: str) -> str:
        out = tmp_path / f"{name}.txt"
        r = call_cli("experiments.train", *TINY, f"data.root={gtzan_root}", "model=mel_only",
                     "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
                     "train.test=false", f"seed={seed}",
                     "+callbacks.probe._target_=tests.test_protocol.InitProbe",
                     f"+callbacks.probe.out={out}", env={"MLFI_OUTPUT_DIR": str(tmp_path)})
        assert r.returncode == 0, r.stderr[-2000:]
        return out.read_text()

    assert init(1, "a") == init(1, "b") != init(2, "c")
