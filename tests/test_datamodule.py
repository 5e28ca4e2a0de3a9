"""GenreDataModule on a generated GTZAN-layout dataset: segments, leak-free splits,
training-only statistics, batch format, reproducibility, augmentation."""
import types

import numpy as np
import pytest
import torch

from datamodules.datamodule import GenreDataModule, spec_augment
from datamodules.errors import UserError
from datamodules.segments import segment_starts
from experiments.config import compose
from tests.conftest import make_gtzan, write_clip


@pytest.fixture(scope="module")
def gtzan_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("gtzan")
    make_gtzan(root, per_genre=5, seconds=6.0)
    return root


def config(root, *extra):
    return compose(["data=gtzan", f"data.root={root}", "data.split=random",
                    "data.clip_seconds=6.0", "data.min_seconds=1.0", "data.batch_size=16",
                    "data.num_workers=0", "cache.workers=0", *extra])


def test_segments_cut_after_split_and_no_clip_in_two_splits(gtzan_root):
    dm = GenreDataModule(config(gtzan_root))
    dm.setup("fit")
    dm.setup("test")
    ids = {s: set(dm.clips(s)["clip_id"]) for s in ("train", "valid", "test")}
    assert sum(map(len, ids.values())) == 50
    assert not (ids["train"] & ids["valid"]) and not (ids["train"] & ids["test"])
    assert not (ids["valid"] & ids["test"])
    ds = dm.datasets["train"]
    # 6-s clips, 3-s windows with 50 % overlap: 129 frames per window, starts every 64/65.
    assert ds.seg == 129 and set(ds.segments_per_clip()) == {3}
    # Every segment of a split belongs to a clip of that split.
    rows = set(ds.rows[ds.clip_pos])
    valid_rows = set(dm.datasets["valid"].rows)
    assert not rows & valid_rows


def test_batches_are_dicts_with_the_documented_shapes(gtzan_root):
    dm = GenreDataModule(config(gtzan_root))
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"mel", "chroma", "label", "clip"}
    assert b["mel"].shape == (16, 1, 128, 129) and b["chroma"].shape == (16, 1, 12, 129)
    assert b["mel"].dtype == torch.float32 and b["label"].dtype == torch.int64
    clips = dm.clips("train")
    assert (clips["label"].to_numpy()[b["clip"].numpy()] == b["label"].numpy()).all()


def test_order_is_seeded(gtzan_root):
    def first_clips(seed):
        dm = GenreDataModule(config(gtzan_root, f"seed={seed}"))
        dm.setup("fit")
        return torch.cat([b["clip"] for b in dm.train_dataloader()]).tolist()

    assert first_clips(1) == first_clips(1)
    assert first_clips(1) != first_clips(2)


def test_normalisation_statistics_come_from_training_clips_only(gtzan_root):
    dm = GenreDataModule(config(gtzan_root))
    dm.setup("fit")
    arr = dm.cache.arrays["mel"]
    train = np.asarray(arr[np.sort(dm.datasets["train"].rows)], dtype=np.float64)
    mean, std = dm.norm_stats["mel"]
    np.testing.assert_allclose(mean, train.mean(axis=(0, 2)), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(std, train.std(axis=(0, 2)), rtol=1e-3, atol=1e-3)
    everything = np.asarray(arr[:], dtype=np.float64).mean(axis=(0, 2))
    assert not np.allclose(mean, everything, atol=1e-3)  # valid/test clips are not in it


def test_batch_size_is_divided_per_device(gtzan_root):
    class FakeTrainer:
        world_size, global_rank, current_epoch = 4, 1, 0
        strategy = types.SimpleNamespace(root_device=torch.device("cpu"))

    dm = GenreDataModule(config(gtzan_root))
    dm.trainer = FakeTrainer()
    dm.setup("fit")
    assert dm.batch_size == 4
    store = dm.train_dataloader()  # rank 1 of 4: a quarter of the segments, 4 per batch
    assert (store.rank, store.world) == (1, 4)
    assert sum(len(b["label"]) for b in store) == len(dm.datasets["train"]) // 4 // 4 * 4
    dm = GenreDataModule(config(gtzan_root, "data.batch_size=10"))
    dm.trainer = FakeTrainer()
    with pytest.raises(UserError, match="not divisible by the number of devices"):
        dm.setup("fit")


def test_empty_split_is_a_clear_error(gtzan_root):
    dm = GenreDataModule(config(gtzan_root, "data.ratios=[1.0,0.0,0.0]"))
    with pytest.raises(UserError, match="valid split of gtzan is empty"):
        dm.setup("fit")


def test_padding_windows_are_dropped():
    # 100 frames of content padded to 400: windows whose centre is in the padding go.
    starts = segment_starts(400, 129, 64, valid_frames=100)
    assert list(starts) == [0]
    assert list(segment_starts(400, 129, 64)) == [0, 64, 128, 192, 256]


def test_spec_augment_masks_with_band_means_and_keeps_inputs_aligned():
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    b = {"mel": torch.randn(8, 1, 128, 100) + 50, "chroma": torch.rand(8, 1, 12, 100) + 5}
    stats = {"mel": (np.full(128, -7.0, np.float32), np.ones(128, np.float32)),
             "chroma": (np.full(12, -3.0, np.float32), np.ones(12, np.float32))}
    sa = OmegaConf.create({"enabled": True, "freq_masks": 0, "freq_width": 0.1,
                           "time_masks": 2, "time_width": 0.3})
    out = spec_augment(b, stats, sa, ["mel", "chroma"])
    mel_masked = (out["mel"] == -7.0).all(dim=2)[:, 0]       # [B, T] whole-frame masks
    chroma_masked = (out["chroma"] == -3.0).all(dim=2)[:, 0]
    assert mel_masked.any() and torch.equal(mel_masked, chroma_masked)
    assert torch.equal(out["mel"][~(out["mel"] == -7.0)], b["mel"][~(out["mel"] == -7.0)])


def test_random_crops_draw_new_windows_each_epoch_inside_the_content(gtzan_root):
    dm = GenreDataModule(config(gtzan_root, "data.train_crops_per_clip=2"))
    dm.setup("fit")
    ds = dm.datasets["train"]
    assert len(ds) == 2 * dm.num_clips("train")
    torch.manual_seed(0)
    a = ds.batch(list(range(len(ds))))
    b = ds.batch(list(range(len(ds))))
    assert not torch.equal(a["mel"], b["mel"])          # new windows per fetch
    torch.manual_seed(0)
    assert torch.equal(ds.batch(list(range(len(ds))))["mel"], a["mel"])  # seeded
    assert a["mel"].shape[-1] == ds.seg and (ds.max_start == ds.total - ds.seg).all()
    assert len(dm.datasets["valid"]) == 3 * dm.num_clips("valid")  # evaluation stays on the grid


def test_statistics_accumulate_over_every_chunk_of_training_clips(gtzan_root):
    dm = GenreDataModule(config(gtzan_root))
    dm.setup("fit")
    whole = dm.norm_stats
    chunked = dm._train_stats(chunk=3)  # 30 training clips in 10 chunks
    for name in ("mel", "chroma"):
        np.testing.assert_allclose(chunked[name][0], whole[name][0], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(chunked[name][1], whole[name][1], rtol=1e-5, atol=1e-4)
        assert chunked[name][0].dtype == np.float32 and chunked[name][1].dtype == np.float32


def test_data_facts_hand_the_model_labels_bins_statistics_and_clip_counts(gtzan_root):
    from datamodules.gtzan import GENRES

    dm = GenreDataModule(config(gtzan_root))
    dm.setup("fit")
    facts = dm.data_facts()
    assert facts.labels == list(GENRES) and facts.input_bins == {"mel": 128, "chroma": 12}
    assert facts.num_clips == {"valid": dm.num_clips("valid")} and dm.num_clips("valid") == 10
    assert set(facts.norm_stats) == {"mel", "chroma"}
    assert facts.norm_stats["mel"][0] is dm.norm_stats["mel"][0]
    dm.setup("test")
    assert dm.data_facts().num_clips == {"valid": 10, "test": 10}


def test_windows_that_would_be_mostly_padding_are_not_cut(tmp_path):
    # 6-s clips; a 4-s file is padded with 2 s: its third window (starting at 2.97 s)
    # would be centred in the padding, so it gets two windows instead of three.
    root = tmp_path / "g"
    top = make_gtzan(root, per_genre=5, seconds=6.0)
    short = {f"{g}.00000" for g in ("blues", "jazz", "rock")}
    for cid in short:
        make_gtzan_clip = top / cid.split(".")[0] / f"{cid}.wav"
        write_clip(make_gtzan_clip, seconds=4.0)
    dm = GenreDataModule(config(root, "data.ratios=[0.6,0.2,0.2]"))
    dm.setup("fit")
    dm.setup("test")
    for split in ("train", "valid", "test"):
        ds, table = dm.datasets[split], dm.clips(split)
        per_clip = dict(zip(table["clip_id"], ds.segments_per_clip()))
        assert all(n == (2 if cid in short else 3) for cid, n in per_clip.items()), per_clip


def test_a_window_longer_than_the_clip_is_zero_padded():
    from datamodules.segments import SegmentDataset

    mel = np.arange(2 * 4 * 50, dtype=np.float32).reshape(2, 4, 50) + 1  # 2 clips, 50 frames
    ds = SegmentDataset({"mel": mel}, rows=np.array([1, 0]), labels=np.array([3, 5]),
                        seg_frames=64, hop_frames=32)
    b = ds.batch([0, 1])
    assert b["mel"].shape == (2, 1, 4, 64)
    assert torch.equal(b["mel"][0, 0, :, :50], torch.from_numpy(mel[1]))
    assert (b["mel"][:, :, :, 50:] == 0).all() and b["label"].tolist() == [3, 5]


def test_random_crops_cover_every_start_inside_the_valid_frames():
    from datamodules.segments import SegmentDataset

    ramp = np.tile(np.arange(100, dtype=np.float32), (1, 2, 1))  # value = frame index
    ds = SegmentDataset({"mel": ramp}, rows=np.array([0]), labels=np.array([0]), seg_frames=20,
                        hop_frames=10, valid_frames=np.array([60]), random_crops=3000)
    torch.manual_seed(0)
    starts = ds.batch(np.arange(len(ds)))["mel"][:, 0, 0, 0].long()
    assert int(starts.min()) == 0 and int(starts.max()) == 40  # valid 60 - 20 frames
    assert len(torch.unique(starts)) == 41


def _mask_runs(masked: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    runs, n = [], 0
    for v in masked.tolist() + [False]:
        if v:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


@pytest.mark.parametrize("masks", [1, 2])
def test_spec_augment_mask_sizes_follow_the_config(masks):
    # time_width 0.2 of 100 frames: each mask is floor(U * 20) frames (0..19, mean 9.5),
    # one run per mask; frequency masks the same over the bands.
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    n, t = 4000, 100
    b = {"mel": torch.randn(n, 1, 40, t) + 50, "chroma": torch.rand(n, 1, 12, t) + 5}
    stats = {"mel": (np.zeros(40, np.float32), np.ones(40, np.float32)),
             "chroma": (np.zeros(12, np.float32), np.ones(12, np.float32))}
    sa = OmegaConf.create({"enabled": True, "freq_masks": 0, "freq_width": 0.2,
                           "time_masks": masks, "time_width": 0.2})
    frames = (spec_augment(b, stats, sa, ["mel", "chroma"])["mel"] == 0).all(dim=2)[:, 0]
    per_example = frames.sum(1).float()
    if masks == 1:
        assert all(len(_mask_runs(row)) <= 1 for row in frames[:200])
        assert per_example.max() <= 19 and abs(per_example.mean().item() - 9.5) < 0.3
    else:  # the union of two masks: 2 x 9.5 minus their expected overlap (~1.2)
        assert 17.0 < per_example.mean().item() < 18.6 and per_example.max() <= 38
    sa = OmegaConf.create({"enabled": True, "freq_masks": masks, "freq_width": 0.2,
                           "time_masks": 0, "time_width": 0.2})
    out = spec_augment(b, stats, sa, ["mel", "chroma"])["mel"]
    bands = (out == 0).all(dim=3)[:, 0].sum(1).float()  # 40 bands: floor(U * 8), mean 3.5
    expected = 3.5 if masks == 1 else 6.5
    assert abs(bands.mean().item() - expected) < 0.25 and bands.max() <= 7 * masks


def test_key_shift_runs_on_training_batches_only(gtzan_root):
    dm = GenreDataModule(config(gtzan_root, "data.key_shift.enabled=true",
                                "data.key_shift.p=1.0", "data.key_shift.max_semitones=1"))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    dm.trainer = types.SimpleNamespace(training=False)
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)["chroma"], batch["chroma"])
    dm.trainer = types.SimpleNamespace(training=True)
    out = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(out["label"], batch["label"])
    for b in range(len(batch["label"])):  # every clip rolled by +1 or -1 pitch class
        rolled = [torch.equal(out["chroma"][b], torch.roll(batch["chroma"][b], k, dims=1))
                  for k in (1, -1)]
        assert any(rolled)
    assert not torch.equal(out["mel"], batch["mel"])
