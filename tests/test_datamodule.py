"""GenreDataModule on a generated GTZAN-layout dataset: segments, leak-free splits,
training-only statistics, batch format, reproducibility, augmentation."""
import numpy as np
import pytest
import torch

from datamodules.datamodule import GenreDataModule, spec_augment
from datamodules.errors import UserError
from datamodules.segments import segment_starts
from experiments.config import compose
from tests.conftest import make_gtzan


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
        world_size = 4

    dm = GenreDataModule(config(gtzan_root))
    dm.trainer = FakeTrainer()
    dm.setup("fit")
    assert dm.batch_size == 4
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
