"""The device-resident feature store: the same segments as the DataLoader path, seeded
crops and order, DDP shards, and the fit decision with its message."""
import pytest
import pytorch_lightning as pl
import torch

from datamodules.datamodule import GenreDataModule
from datamodules.device_store import DeviceStore, decide_store
from datamodules.errors import UserError
from experiments.builders import build_model
from experiments.config import compose
from tests.conftest import TINY_GTZAN_RUN, make_gtzan

GIB = 2 ** 30


@pytest.fixture(scope="module")
def gtzan_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("gtzan")
    make_gtzan(root, per_genre=4, seconds=6.0)
    return root


def datamodule(root, *extra, stage="fit"):
    dm = GenreDataModule(compose([*TINY_GTZAN_RUN, f"data.root={root}", *extra]))
    dm.setup(stage)
    return dm


def test_auto_puts_small_splits_in_memory_and_grid_batches_equal_the_dataloaders(gtzan_root):
    dm = datamodule(gtzan_root)
    assert dm.store_decision.use and "feature store on cpu" in dm.store_decision.reason
    assert isinstance(dm.val_dataloader(), DeviceStore)
    loader_dm = datamodule(gtzan_root, "data.store=loader")
    assert isinstance(loader_dm.val_dataloader(), torch.utils.data.DataLoader)
    got, want = list(dm.val_dataloader()), list(loader_dm.val_dataloader())
    assert len(got) == len(want) == len(dm.val_dataloader()) > 1
    for a, b in zip(got, want):
        for k in ("mel", "chroma", "label", "clip"):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_training_epochs_cover_every_clip_with_seeded_random_crops(gtzan_root):
    dm = datamodule(gtzan_root, "data.train_crops_per_clip=4", "data.batch_size=8")
    store, ds = dm.train_dataloader(), dm.datasets["train"]
    epoch0 = list(store)
    assert len(epoch0) == len(store) == len(ds) // 8  # drop_last, as the DataLoader
    clips = torch.cat([b["clip"] for b in epoch0])
    assert torch.bincount(clips).tolist() == [4] * len(ds.rows)  # a permutation
    # Every window is the cached clip at some start in [0, max_start].
    b = epoch0[0]
    for i in range(len(b["clip"])):
        pos = int(b["clip"][i])
        full = torch.from_numpy(ds.arrays["mel"][ds.rows[pos]].astype("float32"))
        starts = [s for s in range(int(ds.max_start[pos]) + 1)
                  if torch.equal(full[:, s:s + ds.seg], b["mel"][i, 0])]
        assert starts, f"segment {i} is not a window of clip {pos}"
    store.set_epoch(0)
    again = list(store)
    assert all(torch.equal(x["mel"], y["mel"]) for x, y in zip(epoch0, again))
    store.set_epoch(1)
    assert not torch.equal(next(iter(store))["mel"], epoch0[0]["mel"])


def test_ddp_shards_are_disjoint_equal_for_training_and_exact_for_evaluation(gtzan_root):
    dm = datamodule(gtzan_root)
    for split, shuffle in (("train", True), ("valid", False)):
        ds = dm.datasets[split]
        shards = [DeviceStore(ds, batch_size=4, shuffle=shuffle, seed=3, rank=r, world=2)
                  for r in range(2)]
        seen = []
        for s in shards:
            s.set_epoch(5)
            seen.append(torch.cat([torch.stack([b["clip"], b["mel"][:, 0, 0, 0].float()])
                                   for b in s], dim=1))
        n0, n1 = seen[0].shape[1], seen[1].shape[1]
        if shuffle:
            assert n0 == n1 == len(ds) // 2
        else:
            assert n0 + n1 == len(ds)  # every segment scored once, none padded


def test_decision_names_the_sizes_and_the_way_out():
    small = decide_store("auto", GIB, torch.device("cpu"), free=16 * GIB)
    assert small.use and "1.00 GiB of features" in small.reason
    big = decide_store("auto", 10 * GIB, torch.device("cpu"), free=16 * GIB)
    assert not big.use and "DataLoader" in big.reason and "data.store=device" in big.reason
    assert not decide_store("loader", 1, torch.device("cpu"), free=16 * GIB).use
    with pytest.raises(UserError, match=r"10.00 GiB .* data.store=loader"):
        decide_store("device", 10 * GIB, torch.device("cpu"), free=16 * GIB)
    with pytest.raises(UserError, match="data.store='gpu'"):
        decide_store("gpu", 1, torch.device("cpu"))


def test_validation_scores_are_the_same_through_store_and_dataloader(gtzan_root):
    scores = {}
    for store in ("device", "loader"):
        cfg = compose([*TINY_GTZAN_RUN, f"data.root={gtzan_root}", "model=mid_two_way",
                       f"data.store={store}"])
        pl.seed_everything(0, verbose=False)
        dm = GenreDataModule(cfg)
        model = build_model(cfg, dm)
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(model, datamodule=dm)
        assert isinstance(trainer.train_dataloader, DeviceStore) == (store == "device")
        torch.manual_seed(1)
        fixed = build_model(cfg, dm)
        fixed.set_normalization(dm.norm_stats)
        res = trainer.validate(fixed, datamodule=dm, verbose=False)[0]
        scores[store] = (res["val/acc_clip"], res["val/loss"])
    assert scores["device"] == pytest.approx(scores["loader"], abs=1e-6)
