"""Models: backbones, the join, every interaction mode's wiring, clip voting, a tiny fit."""
from __future__ import annotations

import copy
import math
import socket

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from lightning_modules import (
    MODES,
    ClipVoting,
    Join,
    MidIntoMel,
    build_backbone,
    build_model,
    join,
    load_model,
)

LABELS = ["blues", "jazz", "rock"]
CNNS = ("serial_cnn", "parallel_cnn")
MID_MODES = ("mid_into_mel", "mid_into_chroma", "mid_two_way")
# Default CNN channels per stage (16, 32, 64, 128): stage-k output channels.
DEFAULT_OUT = [16, 32, 64, 128]


def _inputs(batch=2, frames=130, seed=0):
    g = torch.Generator().manual_seed(seed)
    mel = -40 + 10 * torch.randn(batch, 1, 128, frames, generator=g)
    chroma = torch.rand(batch, 1, 12, frames, generator=g)
    return mel, chroma


def _first_conv_in(stage: nn.Module) -> int:
    """Input width of a stage's first conv (or Linear) layer."""
    layer = next(m for m in stage.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    return layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("backbone", CNNS)
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_forward_shape_and_widened_stage(mode, backbone):
    mel, chroma = _inputs()
    short_mel, short_chroma = _inputs(frames=16)
    for tap in (1, 2, 3):
        torch.manual_seed(0)
        model = build_model(mode, labels=LABELS, backbone=backbone, tap=tap).eval()
        with torch.no_grad():
            assert model(mel, chroma).shape == (2, 3)
            assert model(short_mel, short_chroma).shape == (2, 3)
        for name, branch in model.branches.items():
            donor = model.receives.get(name)
            for k, stage in enumerate(branch.stages):  # k: 0-based index of stage k+1
                expected = 1 if k == 0 else DEFAULT_OUT[k - 1]
                if donor is not None and k == tap:
                    expected += DEFAULT_OUT[tap - 1]  # the donor's stage-tap channels
                assert _first_conv_in(stage) == expected, (mode, tap, name, k)
    assert set(model.branches) == set(MODES[mode].branch_names)


def test_single_branch_modes_ignore_the_other_input():
    mel, chroma = _inputs()
    mel_only = build_model("mel_only", labels=LABELS, backbone="serial_cnn").eval()
    chroma_only = build_model("chroma_only", labels=LABELS, backbone="serial_cnn").eval()
    with torch.no_grad():
        assert torch.equal(mel_only(mel, chroma), mel_only(mel, None))
        assert torch.equal(mel_only(mel, chroma), mel_only(mel, torch.zeros_like(chroma)))
        assert torch.equal(chroma_only(mel, chroma), chroma_only(None, chroma))
    with pytest.raises(ValueError, match="needs the 'mel' input"):
        mel_only(None, chroma)


@pytest.mark.parametrize("mode", MID_MODES)
@pytest.mark.parametrize("tap", (0, 4, 7))
def test_impossible_tap_names_the_valid_range(mode, tap):
    with pytest.raises(ValueError, match=r"valid taps are 1\.\.3") as err:
        build_model(mode, labels=LABELS, backbone="parallel_cnn", tap=tap)
    assert "parallel_cnn" in str(err.value) and f"tap={tap}" in str(err.value)


def test_tap_range_follows_the_backbone_depth():
    with pytest.raises(ValueError, match=r"valid taps are 1\.\.1"):
        build_model("mid_into_mel", labels=LABELS, backbone="serial_cnn",
                    backbone_kwargs={"channels": [8, 16]}, tap=2)
    with pytest.raises(ValueError, match=r"'mlp'.*valid taps are 1\.\.2"):
        build_model("mid_two_way", labels=LABELS, backbone="mlp", tap=3)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid modes: late_fusion, mid_into_mel"):
        build_model("mid_into_bass", labels=LABELS)
    with pytest.raises(ValueError, match="registered backbones: mlp, parallel_cnn, serial_cnn"):
        build_model("late_fusion", labels=LABELS, backbone="resnet")


def test_chroma_pooling_never_collapses_and_short_segments_work():
    for name in CNNS:
        chroma_net = build_backbone(name, 1, input_freq=12).eval()
        with torch.no_grad():
            assert chroma_net(torch.rand(2, 1, 12, 130)).shape == (2, 128, 3, 9)
            assert chroma_net(torch.rand(2, 1, 12, 8)).shape == (2, 128, 3, 1)
            assert build_backbone(name, 1).eval()(torch.rand(2, 1, 128, 8)).shape == (2, 128, 8, 1)


def test_mlp_backbone_in_a_mid_mode_on_vectors():
    torch.manual_seed(0)
    model = build_model("mid_into_mel", labels=LABELS, backbone="mlp", tap=1,
                        backbone_kwargs={"channels": [64, 32, 16]}).eval()
    mel, chroma = _inputs(batch=4)
    mel_vec, chroma_vec = mel.mean(dim=3).flatten(1), chroma.mean(dim=3).flatten(1)
    with torch.no_grad():
        out = model(mel_vec, chroma_vec)
        assert out.shape == (4, 3)
        # Maps are normalised and averaged over time: the same vectors.
        torch.testing.assert_close(model(mel, chroma), out)
    mel_branch = model.branches["mel"]
    assert mel_branch.stages[1][0].in_features == 64 + 64  # mel stage 1 + chroma stage 1
    assert model.branches["chroma"].stages[0][0].in_features == 12
    with pytest.raises(ValueError, match="no convolution layer"):
        model.branch_last_conv("mel")


# ------------------------------------------------------------------------------ fusion
def test_join_resizes_each_axis_independently():
    donor = torch.arange(6 * 4, dtype=torch.float).view(1, 1, 6, 4)
    receiver = torch.zeros(1, 3, 3, 8)
    out = join(receiver, donor)
    assert out.shape == (1, 4, 3, 8)
    assert torch.equal(out[:, :3], receiver)
    # Frequency shrinks 6 -> 3 by averaging pairs of rows; time grows 4 -> 8 (nearest).
    rows = donor.view(3, 2, 4).mean(dim=1)
    torch.testing.assert_close(out[0, 3], rows.repeat_interleave(2, dim=1))
    assert join(receiver, donor, upsample="bilinear").shape == (1, 4, 3, 8)
    assert join(torch.zeros(2, 5), torch.ones(2, 7)).shape == (2, 12)
    with pytest.raises(ValueError, match="must both be"):
        join(torch.zeros(2, 5), torch.zeros(2, 1, 3, 3))


# --------------------------------------------------------------- ReLUs and attribution
def test_relus_are_non_inplace_modules_and_no_functional_relu(monkeypatch):
    for backbone in CNNS:
        model = build_model("mid_two_way", labels=LABELS, backbone=backbone).eval()
        relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        assert relus and not any(m.inplace for m in relus)
        module_calls, all_calls = [0], [0]
        for m in relus:
            m.register_forward_hook(lambda *_: module_calls.__setitem__(0, module_calls[0] + 1))
        real_relu = torch.relu

        def counting_relu(x):
            all_calls[0] += 1
            return real_relu(x)

        monkeypatch.setattr(torch, "relu", counting_relu)
        with torch.no_grad():
            model(*_inputs(frames=16))
        monkeypatch.setattr(torch, "relu", real_relu)
        # Every ReLU applied in forward went through an nn.ReLU module.
        assert all_calls[0] == module_calls[0] == len(relus)


def test_guided_backprop_and_gradcam_hooks_see_the_relus():
    from captum.attr import GuidedBackprop, LayerGradCam, Saliency

    torch.manual_seed(0)
    model = build_model("mid_into_mel", labels=LABELS, backbone="parallel_cnn").eval()
    mel, chroma = _inputs(frames=32)
    guided = GuidedBackprop(model).attribute((mel, chroma), target=1)
    plain = Saliency(model).attribute((mel, chroma), target=1, abs=False)
    assert guided[0].shape == mel.shape and guided[1].shape == chroma.shape
    assert not torch.allclose(guided[0], plain[0])
    cam = LayerGradCam(model, model.branch_last_conv("mel")).attribute((mel, chroma), target=1)
    assert cam.shape == (2, 1, 16, 4)  # the last stage's map before its pooling: 128/8, 32/8
    assert model.branch_last_conv("chroma") is model.branches["chroma"].stages[-1].features.merge
    with pytest.raises(ValueError, match="no 'chroma' branch"):
        build_model("mel_only", labels=LABELS).branch_last_conv("chroma")


# ------------------------------------------------------------------------------ wiring
def _stage_output_grad(model, branch, stage_index, wrt):
    """d(sum of branch's stages[stage_index] output)/d(input ``wrt``), or None."""
    mel, chroma = _inputs(frames=32)
    x = {"mel": mel.requires_grad_(), "chroma": chroma.requires_grad_()}
    captured = {}
    hook = model.branches[branch].stages[stage_index].register_forward_hook(
        lambda m, i, o: captured.setdefault("out", o))
    model(x["mel"], x["chroma"])
    hook.remove()
    (grad,) = torch.autograd.grad(captured["out"].sum(), x[wrt], allow_unused=True)
    return grad


@pytest.mark.parametrize("tap", (1, 2))
def test_wiring_joins_exactly_where_the_mode_says(tap):
    def build(mode):
        torch.manual_seed(0)
        return build_model(mode, labels=LABELS, backbone="serial_cnn", tap=tap).eval()

    into_mel, into_chroma, two_way, late = (build(m) for m in (
        "mid_into_mel", "mid_into_chroma", "mid_two_way", "late_fusion"))

    def depends(model, branch, index, wrt):
        grad = _stage_output_grad(model, branch, index, wrt)
        return grad is not None and grad.abs().sum() > 0

    # Stage tap+1 (index tap) of the receiver reads the donor's input; before it, no.
    assert depends(into_mel, "mel", tap, "chroma")
    assert not depends(into_mel, "mel", tap - 1, "chroma")
    assert not depends(into_mel, "chroma", 3, "mel")
    assert depends(into_chroma, "chroma", tap, "mel")
    assert not depends(into_chroma, "mel", 3, "chroma")
    assert depends(two_way, "mel", tap, "chroma") and depends(two_way, "chroma", tap, "mel")
    for index in range(4):
        assert not depends(late, "mel", index, "chroma")
        assert not depends(late, "chroma", index, "mel")
    # Late fusion still uses both inputs, at the head.
    mel, chroma = _inputs(frames=32)
    with torch.no_grad():
        assert not torch.allclose(late(mel, chroma), late(mel, torch.zeros_like(chroma)))


def test_normalisation_happens_inside_forward():
    torch.manual_seed(0)
    model = build_model("late_fusion", labels=LABELS, backbone="serial_cnn").eval()
    mel, chroma = _inputs(frames=16)
    with torch.no_grad():
        raw = model(mel, chroma)
        mel_mean, mel_std = torch.linspace(-50, -30, 128), torch.linspace(5, 15, 128)
        model.set_normalization({"mel": (mel_mean.numpy(), mel_std.numpy()),
                                 "chroma": ([0.5] * 12, [0.25] * 12)})
        normalised = model(mel, chroma)
        model.set_normalization({"mel": (torch.zeros(128), torch.ones(128)),
                                 "chroma": (torch.zeros(12), torch.ones(12))})
        manual = model((mel - mel_mean.view(1, 1, -1, 1)) / mel_std.view(1, 1, -1, 1),
                       (chroma - 0.5) / 0.25)
    torch.testing.assert_close(normalised, manual)
    assert not torch.allclose(raw, normalised)
    with pytest.raises(ValueError, match="must have 12 values"):
        model.set_normalization({"chroma": (np.zeros(13), np.ones(13))})
    with pytest.raises(ValueError, match=r"expects \[B, 1, 128, T\]"):
        model(torch.zeros(2, 1, 96, 20), chroma)


# -------------------------------------------------------------------------- voting
# Clip 0 (label 0): 3 segments, two of them wrong, but the mean probability picks class 0.
# Clip 1 (label 2): 1 correct segment. Clip 2 (label 1): 2 segments, both wrong.
VOTE_PROBS = torch.tensor([[0.90, 0.05, 0.05], [0.30, 0.60, 0.10], [0.25, 0.65, 0.10],
                           [0.10, 0.10, 0.80], [0.70, 0.20, 0.10], [0.50, 0.40, 0.10]])
VOTE_LABELS = torch.tensor([0, 0, 0, 2, 1, 1])
VOTE_CLIPS = torch.tensor([0, 0, 0, 1, 2, 2])


@pytest.mark.parametrize("num_clips", (3, None))
def test_clip_voting_by_mean_probability(num_clips):
    voting = ClipVoting(3, num_clips=num_clips)
    voting.update(VOTE_PROBS, VOTE_LABELS, VOTE_CLIPS)
    res = voting.compute()
    assert float(res["acc"]) == pytest.approx(2 / 3)
    segment_acc = (VOTE_PROBS.argmax(1) == VOTE_LABELS).float().mean()
    assert float(segment_acc) == pytest.approx(2 / 6)  # differs from the clip accuracy
    torch.testing.assert_close(res["probs"][0], VOTE_PROBS[:3].mean(0))
    assert res["labels"].tolist() == [0, 2, 1]
    assert res["confusion"].tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 1]]
    # Per class F1: class 0 = 2/3, class 1 = 0, class 2 = 1.
    assert float(res["f1_macro"]) == pytest.approx((2 / 3 + 0 + 1) / 3)


@pytest.mark.parametrize("num_clips", (5, None))
def test_clip_voting_merges_ranks(num_clips):
    # Rank A sees segments 0, 1, 3; rank B 2, 4, 5 (clip 0 is split across ranks).
    a, b = ClipVoting(3, num_clips=num_clips), ClipVoting(3, num_clips=num_clips)
    ia, ib = torch.tensor([0, 1, 3]), torch.tensor([2, 4, 5])
    a.update(VOTE_PROBS[ia], VOTE_LABELS[ia], VOTE_CLIPS[ia])
    b.update(VOTE_PROBS[ib], VOTE_LABELS[ib], VOTE_CLIPS[ib])
    # Each rank alone: A votes clip 0 from segments 0 and 1 (right) and clip 1 (right);
    # B votes clip 0 from segment 2 alone (wrong) and clip 2 (wrong).
    # (on copies: torchmetrics caches compute() and merge_state does not clear that cache)
    assert float(copy.deepcopy(a).compute()["acc"]) == 1.0
    assert float(copy.deepcopy(b).compute()["acc"]) == 0.0
    a.merge_state(b)
    res = a.compute()
    assert float(res["acc"]) == pytest.approx(2 / 3)
    torch.testing.assert_close(res["probs"][0], VOTE_PROBS[:3].mean(0))
    if num_clips:
        assert torch.isnan(res["probs"][3:]).all() and res["labels"][3:].tolist() == [-1, -1]


def _ddp_voting_worker(rank, world, port, queue):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        idx = torch.tensor([[0, 1, 3], [2, 4, 5]][rank])
        for num_clips in (3, None):
            voting = ClipVoting(3, num_clips=num_clips)
            voting.update(VOTE_PROBS[idx], VOTE_LABELS[idx], VOTE_CLIPS[idx])
            res = voting.compute()
            queue.put((rank, num_clips, float(res["acc"]), res["probs"][:3].tolist()))
    finally:
        dist.destroy_process_group()


def test_clip_voting_under_two_process_ddp():
    """Two gloo processes, clip 0's segments split across them: both ranks get the
    clip votes of the whole split, for the fixed-size (sum) and the growing (cat) states."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_ddp_voting_worker, args=(2, port, queue), nprocs=2,
                       start_method="spawn")
    results = [queue.get() for _ in range(4)]
    assert sorted((r[0], str(r[1])) for r in results) == [
        (0, "3"), (0, "None"), (1, "3"), (1, "None")]
    expected = VOTE_PROBS[:3].mean(0).tolist()
    for _, _, acc, probs in results:
        assert acc == pytest.approx(2 / 3)
        assert probs[0] == pytest.approx(expected)


def test_clip_voting_rejects_bad_clip_indices():
    voting = ClipVoting(3, num_clips=2)
    with pytest.raises(ValueError, match="out of range for num_clips=2"):
        voting.update(VOTE_PROBS, VOTE_LABELS, VOTE_CLIPS)
    voting = ClipVoting(3)
    voting.update(VOTE_PROBS[:2], torch.tensor([0, 1]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="different labels"):
        voting.compute()


# ---------------------------------------------------------------------- tiny training
FRAMES = 24


class _Segments(Dataset):
    """Learnable random segments: the class is a bright Mel row and a bright chroma bin."""

    def __init__(self, clips_per_class: int, segments: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        n = len(LABELS) * clips_per_class * segments
        self.label = torch.arange(len(LABELS)).repeat_interleave(clips_per_class * segments)
        self.clip = torch.arange(len(LABELS) * clips_per_class).repeat_interleave(segments)
        self.mel = -60 + 8 * torch.randn(n, 1, 128, FRAMES, generator=g)
        self.chroma = 0.3 * torch.rand(n, 1, 12, FRAMES, generator=g)
        for i, y in enumerate(self.label.tolist()):
            self.mel[i, 0, 20 + 40 * y: 24 + 40 * y] += 30
            self.chroma[i, 0, 4 * y] += 0.7

    def __len__(self):
        return len(self.label)

    def __getitem__(self, i):
        return {"mel": self.mel[i], "chroma": self.chroma[i], "label": self.label[i],
                "clip": self.clip[i]}


class _TinyData(pl.LightningDataModule):
    def __init__(self):
        super().__init__()
        self.train = _Segments(clips_per_class=4, segments=4, seed=0)
        self.valid = _Segments(clips_per_class=2, segments=3, seed=1)

    def data_facts(self):
        from datamodules.datamodule import DataFacts

        bins = {"mel": self.train.mel.shape[2], "chroma": self.train.chroma.shape[2]}
        return DataFacts(list(LABELS), bins, self.stats(), {"valid": 6, "test": 6})

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=16, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.valid, batch_size=8)

    def test_dataloader(self):
        return DataLoader(self.valid, batch_size=8)

    def stats(self):
        return {"mel": (self.train.mel.mean(dim=(0, 1, 3)), self.train.mel.std(dim=(0, 1, 3))),
                "chroma": (self.train.chroma.mean(dim=(0, 1, 3)),
                           self.train.chroma.std(dim=(0, 1, 3)))}


def _trainer(**kwargs):
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kwargs)


def _train_loss(model, data):
    model.eval()
    with torch.no_grad():
        b = data.train[:]
        loss = nn.functional.cross_entropy(model(b["mel"], b["chroma"]), b["label"])
    return float(loss)


def test_tiny_fit_logs_metrics_and_checkpoint_round_trips(tmp_path):
    pl.seed_everything(0, verbose=False)
    data = _TinyData()
    model = build_model("mid_into_mel", labels=LABELS, backbone="serial_cnn", tap=1,
                        backbone_kwargs={"channels": [8, 16], "dropout": 0.0}, lr=3e-3,
                        extra={"segment_seconds": 3.0, "hop_length": 512})
    model.set_normalization(data.stats())
    before = _train_loss(model, data)
    trainer = _trainer(max_epochs=2)
    trainer.fit(model, datamodule=data)
    after = _train_loss(model, data)
    assert after < before
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/acc_segment", "val/loss", "val/acc_segment",
                "val/acc_clip", "val/f1_macro", "val/acc_clip_best"):
        assert key in metrics and math.isfinite(float(metrics[key])), key
    # The datamodule's clip count sized the voter; every validation clip was voted.
    assert model.val_voting.num_clips == 6
    val = model.clip_results["val"]
    assert val.probs.shape == (6, 3) and not np.isnan(val.probs).any()
    assert val.confusion.sum() == 6
    assert float(metrics["val/acc_clip"]) == pytest.approx(
        float((val.probs.argmax(1) == val.labels).mean()))
    assert val.acc == pytest.approx(float(metrics["val/acc_clip"]))

    trainer.test(model, datamodule=data, verbose=False)
    for key in ("test/loss", "test/acc_segment", "test/acc_clip", "test/f1_macro"):
        assert key in trainer.callback_metrics, key
    assert model.clip_results["test"].confusion.shape == (3, 3)

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_model(path)
    assert isinstance(loaded, MidIntoMel) and loaded.hparams.mode == "mid_into_mel"
    assert loaded.hparams.extra == {"segment_seconds": 3.0, "hop_length": 512}
    assert loaded.labels == LABELS
    for name in ("mel_mean", "mel_std", "chroma_mean", "chroma_std"):
        assert torch.equal(getattr(loaded, name), getattr(model, name))
    assert not torch.equal(loaded.mel_mean, torch.zeros_like(loaded.mel_mean))
    b = data.valid[:]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(b["mel"], b["chroma"]), model(b["mel"], b["chroma"]),
                                   rtol=0, atol=0)


@pytest.mark.parametrize("mode", ("mid_two_way", "chroma_only"))
def test_label_smoothing_mixup_and_warmup_run(mode):
    pl.seed_everything(0, verbose=False)
    model = build_model(mode, labels=LABELS, backbone="parallel_cnn", tap=1,
                        backbone_kwargs={"channels": [6, 12]}, label_smoothing=0.1,
                        mixup_alpha=0.4, scheduler="cosine", warmup_epochs=1)
    trainer = _trainer(max_steps=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=_TinyData())
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert trainer.global_step == 2


def test_warmup_then_cosine_learning_rates_at_given_steps():
    # 48 training segments / batch 16 = 3 steps per epoch, 4 epochs = 12 steps; warm-up of
    # one epoch = 3 steps: lr * (k + 1) / 3, then half a cosine from lr down over 9 steps.
    seen = []

    class _Lr(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    model = build_model("late_fusion", labels=LABELS, backbone="serial_cnn",
                        backbone_kwargs={"channels": [4, 8], "dropout": 0.0}, lr=0.01,
                        scheduler="cosine", warmup_epochs=1)
    trainer = _trainer(max_epochs=4, limit_val_batches=0, num_sanity_val_steps=0,
                       callbacks=[_Lr()])
    trainer.fit(model, datamodule=_TinyData())
    assert len(seen) == 12
    expected = [0.01 / 3, 0.02 / 3, 0.01] + [
        0.005 * (1 + math.cos(math.pi * k / 9)) for k in range(9)]
    assert seen == pytest.approx(expected, rel=1e-9)
    assert seen[7] == pytest.approx(0.005 * (1 + math.cos(math.pi * 4 / 9)))  # 0.00587


def test_bilinear_join_interpolates_time_between_donor_frames():
    donor = torch.tensor([[[[0.0, 4.0]]]])  # [1, 1, 1, 2]: one band, two frames
    receiver = torch.zeros(1, 2, 1, 4)
    nearest = join(receiver, donor)[0, 2, 0]
    bilinear = Join("bilinear")(receiver, donor)[0, 2, 0]
    assert nearest.tolist() == [0.0, 0.0, 4.0, 4.0]
    # Half-pixel centres (align_corners=False): 0, 1, 3, 4.
    assert bilinear.tolist() == [0.0, 1.0, 3.0, 4.0]
    assert Join("bilinear").extra_repr() == "upsample='bilinear'"
    # A donor as tall as the receiver is only resized along time.
    assert torch.equal(join(torch.zeros(1, 1, 3, 4), torch.ones(1, 1, 3, 4))[0, 1],
                       torch.ones(3, 4))


def test_a_clip_with_one_segment_votes_with_that_segments_probabilities():
    for num_clips in (2, None):
        voting = ClipVoting(3, num_clips=num_clips)
        voting.update(torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]]),
                      torch.tensor([1, 0, 0]), torch.tensor([0, 1, 1]))
        res = voting.compute()
        torch.testing.assert_close(res["probs"], torch.tensor([[0.2, 0.5, 0.3],
                                                               [0.35, 0.55, 0.1]]))
        assert res["labels"].tolist() == [1, 0] and float(res["acc"]) == 0.5


def test_clip_voting_with_nothing_voted_and_a_wrong_shape():
    res = ClipVoting(4).compute()
    assert torch.isnan(res["acc"]) and torch.isnan(res["f1_macro"])
    assert res["confusion"].dtype == torch.long and res["confusion"].tolist() == [[0] * 4] * 4
    assert res["probs"].shape == (0, 4) and res["labels"].shape == (0,)
    with pytest.raises(ValueError, match=r"probs must be \[N, 3\], got \(2, 4\)"):
        ClipVoting(3).update(torch.zeros(2, 4), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"probs must be \[N, 3\], got \(2,\)"):
        ClipVoting(3).update(torch.zeros(2), torch.zeros(2), torch.zeros(2))


@pytest.mark.parametrize("dropout", (0.0, 0.2))
def test_backbone_sizes_batch_norms_and_dropout(dropout):
    # serial_cnn, channels [4, 8]: 3x3 convolutions without bias (1*4*9 + 4*8*9 = 324)
    # and a BatchNorm per conv (2 * (4 + 8) = 24).
    serial = build_backbone("serial_cnn", 1, channels=[4, 8], input_freq=16, dropout=dropout)
    assert sum(p.numel() for p in serial.parameters()) == 348
    # parallel_cnn: three paths (3x3, 1x7, 7x1) and a 1x1 merge per stage, each with BN.
    parallel = build_backbone("parallel_cnn", 1, channels=[4, 8], input_freq=16,
                              dropout=dropout)
    assert sum(p.numel() for p in parallel.parameters()) == 416
    for b, norms in ((serial, 2), (parallel, 8)):
        assert sum(isinstance(m, nn.BatchNorm2d) for m in b.modules()) == norms
        assert not any(m.bias is not None for m in b.modules() if isinstance(m, nn.Conv2d))
        drops = [m.p for m in b.modules() if isinstance(m, nn.Dropout)]
        assert drops == ([dropout] * 2 if dropout else [])


def test_pooling_never_exceeds_a_short_input():
    # A 2-frame, 2-band input through 4 stages: time pools shrink to what is left (2 -> 1)
    # and never fail; bands below min_freq (3) are not pooled at all.
    b = build_backbone("serial_cnn", 1, channels=[4, 4, 4, 4], input_freq=2)
    assert b(torch.randn(1, 1, 2, 2)).shape == (1, 4, 2, 1)
    assert b(torch.randn(1, 1, 2, 5)).shape == (1, 4, 2, 1)


@pytest.mark.parametrize("shape,kernel", [((2, 3, 64, 65), (2, 2)), ((2, 3, 7, 5), (2, 3)),
                                          ((2, 3, 3, 9), (1, 2)), ((1, 2, 1, 1), (2, 2))])
def test_pooling_without_gradients_gives_the_pooling_kernels_values(shape, kernel):
    from lightning_modules.backbones import SafeMaxPool2d

    x = torch.randn(shape)
    k = (min(kernel[0], shape[2]), min(kernel[1], shape[3]))
    want = x if k == (1, 1) else F.max_pool2d(x, k, stride=k, ceil_mode=True)
    with torch.no_grad():
        got = SafeMaxPool2d(kernel)(x)
    assert torch.equal(got, want) and got.is_contiguous()
    # With gradients the pooling kernel runs (its backward routes to the first maximum).
    xg = x.clone().requires_grad_()
    SafeMaxPool2d(kernel)(xg).sum().backward()
    assert xg.grad.sum() == want.numel()


# ------------------------------------------------------------------------------ joins
@pytest.mark.parametrize("backbone", CNNS)
@pytest.mark.parametrize("mode", MID_MODES)
@pytest.mark.parametrize("tap", (1, 2, 3))
def test_every_join_has_concats_parameter_count_within_5_percent(backbone, mode, tap):
    from lightning_modules.capacity import count_params

    counts = {j: count_params(build_model(mode, labels=LABELS, backbone=backbone, tap=tap,
                                          join=j)) for j in ("concat", "broadcast", "film")}
    assert counts["broadcast"] == counts["concat"]
    assert abs(counts["film"] / counts["concat"] - 1) <= 0.05, counts
    # The film join does not widen the receiver: its parameters sit in the generator.
    film = build_model(mode, labels=LABELS, backbone=backbone, tap=tap, join="film")
    assert count_params(film.joins) > 0 and count_params(film.branches) < counts["concat"]


def test_broadcast_join_ignores_where_the_donor_rows_are_and_concat_does_not():
    from lightning_modules.fusion import broadcast_join

    g = torch.Generator().manual_seed(0)
    receiver = torch.randn(2, 4, 8, 5, generator=g)
    donor = torch.randn(2, 3, 3, 5, generator=g)
    flipped = donor.flip(2)
    assert torch.allclose(broadcast_join(receiver, donor), broadcast_join(receiver, flipped))
    assert not torch.allclose(join(receiver, donor), join(receiver, flipped))
    out = broadcast_join(receiver, donor)
    assert out.shape == (2, 7, 8, 5)
    # Every receiver row carries the donor averaged over its rows, frame by frame.
    assert torch.allclose(out[:, 4:, 6], donor.mean(dim=2))


def test_film_join_starts_as_the_identity_and_keeps_time_aligned():
    torch.manual_seed(0)
    j = Join(kind="film", receiver_channels=4, donor_channels=3, hidden=5)
    receiver, donor = torch.randn(2, 4, 8, 6), torch.randn(2, 3, 3, 6)
    assert torch.equal(j(receiver, donor), receiver)
    nn.init.normal_(j.generator[2].weight)
    out = j(receiver, donor)
    assert out.shape == receiver.shape and not torch.allclose(out, receiver)
    # Scale and shift at frame t come from donor frames t-1 .. t+1 only (a (1, 3) kernel).
    changed = donor.clone()
    changed[..., 0] += 5.0
    diff = (j(receiver, changed) - out).abs().amax(dim=(0, 1, 2))
    assert diff[:2].gt(0).all() and diff[2:].eq(0).all()


def test_join_names_are_checked_and_the_mlp_backbone_concatenates():
    with pytest.raises(ValueError, match="model.join='gate': expected one of concat, "
                                         "broadcast, film"):
        build_model("mid_two_way", labels=LABELS, join="gate")
    model = build_model("mid_two_way", labels=LABELS, backbone="mlp", join="film",
                        backbone_kwargs={"channels": [16, 8]}, tap=1)
    assert all(j.kind == "concat" for j in model.joins.values())
    assert model(torch.randn(3, 128), torch.randn(3, 12)).shape == (3, 3)


@pytest.mark.parametrize("join_kind", ("broadcast", "film"))
def test_every_join_feeds_the_receiver_from_the_donor_at_the_tap(join_kind):
    torch.manual_seed(0)
    model = build_model("mid_into_mel", labels=LABELS, backbone="serial_cnn", tap=2,
                        join=join_kind).eval()
    if join_kind == "film":  # from zero-initialised scale/shift the donor has no effect yet
        nn.init.normal_(model.joins["mel"].generator[2].weight, std=0.1)
    grad = _stage_output_grad(model, "mel", 2, "chroma")
    assert grad is not None and grad.abs().sum() > 0
    before = _stage_output_grad(model, "mel", 1, "chroma")
    assert before is None or before.abs().sum() == 0
