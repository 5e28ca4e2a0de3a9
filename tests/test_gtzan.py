import pandas as pd
import pytest

from datamodules.errors import DatasetNotFoundError, UserError
from datamodules.gtzan import GENRES, index_gtzan
from datamodules.index import UNUSED
from datamodules.splits import fault_filtered_lists
from tests.conftest import make_gtzan, write_clip


def cfg(root, **kw):
    base = {"root": str(root), "split": "random", "ratios": [0.6, 0.2, 0.2], "folds": 5,
            "fold": 0, "split_seed": 0, "min_seconds": 1.0}
    base.update(kw)
    return base


@pytest.mark.parametrize("layout,ext,expected", [
    ("archive", ".au", "genres"),
    ("reupload", ".wav", "Data/genres_original"),
    ("flat", ".wav", "."),
])
def test_finds_genre_folders_in_each_layout(tmp_path, layout, ext, expected):
    make_gtzan(tmp_path, layout=layout, ext=ext, per_genre=2)
    ix = index_gtzan(cfg(tmp_path))
    assert len(ix) == 20 and ix.skipped == []
    assert ix.info["layout"] == expected
    assert ix.labels == list(GENRES)
    assert sorted(ix.table["clip_id"])[:2] == ["blues.00000", "blues.00001"]
    assert (ix.table["genre"].map(GENRES.index) == ix.table["label"]).all()


def test_archive_litter_is_ignored_and_counted(tmp_path):
    top = make_gtzan(tmp_path, layout="archive", per_genre=1)
    (top / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (top / "blues" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    ix = index_gtzan(cfg(tmp_path))
    assert len(ix) == 10
    assert ix.info["ignored"][".mf"] == 10 and ix.info["ignored"]["README"] == 1
    assert ix.skipped == []


def test_bad_files_are_skipped_with_reasons(tmp_path):
    top = make_gtzan(tmp_path, layout="reupload", per_genre=2)
    (top / "jazz" / "jazz.00054.wav").write_bytes(b"")
    trunc = top / "rock" / "rock.00007.wav"
    write_clip(trunc, seconds=3.0)
    trunc.write_bytes(trunc.read_bytes()[:5000])
    (top / "pop" / "x.wav").write_text("not audio")
    write_clip(top / "pop" / "take2.wav", seconds=1.5)
    (top / "blues" / "._blues.00000.wav").write_bytes(b"\0\5\26\7" + b"\0" * 60)
    ix = index_gtzan(cfg(tmp_path))
    assert len(ix) == 20
    reasons = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in ix.skipped}
    assert reasons["jazz.00054.wav"] == "empty file (0 bytes)"
    assert reasons["rock.00007.wav"].startswith("truncated")
    assert "not a readable audio file" in reasons["x.wav"]
    assert "not a GTZAN clip id" in reasons["take2.wav"]
    assert "AppleDouble" in reasons["._blues.00000.wav"]


def test_label_set_is_fixed_whatever_files_exist(tmp_path):
    make_gtzan(tmp_path, genres=("jazz", "rock"), per_genre=2)
    ix = index_gtzan(cfg(tmp_path))
    assert ix.labels == list(GENRES)
    assert set(ix.table["label"]) == {GENRES.index("jazz"), GENRES.index("rock")}
    assert ix.per_label()["blues"] == 0


def test_missing_root_names_the_path_and_how_to_get_gtzan(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist.*cannot be downloaded"):
        index_gtzan(cfg(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no genre folders"):
        index_gtzan(cfg(tmp_path / "empty"))


def test_two_copies_is_an_error_naming_both(tmp_path):
    make_gtzan(tmp_path / "a", per_genre=1)
    make_gtzan(tmp_path / "b", per_genre=1)
    with pytest.raises(UserError, match="several GTZAN copies"):
        index_gtzan(cfg(tmp_path))


def _disjoint(ix):
    sets = {s: set(ix.split(s)["clip_id"]) for s in ("train", "valid", "test")}
    assert not (sets["train"] & sets["valid"]) and not (sets["train"] & sets["test"])
    assert not (sets["valid"] & sets["test"])
    return sets


def test_random_split_is_stratified_seeded_and_disjoint(tmp_path):
    make_gtzan(tmp_path, per_genre=10, seconds=1.2)
    a = index_gtzan(cfg(tmp_path, ratios=[0.6, 0.2, 0.2], split_seed=1))
    b = index_gtzan(cfg(tmp_path, ratios=[0.6, 0.2, 0.2], split_seed=1))
    c = index_gtzan(cfg(tmp_path, ratios=[0.6, 0.2, 0.2], split_seed=2))
    assert a.per_split() == {"train": 60, "valid": 20, "test": 20}
    assert (a.table["split"] == b.table["split"]).all()
    assert not (a.table["split"] == c.table["split"]).all()
    per_genre = a.table.groupby("genre")["split"].value_counts().unstack()
    assert (per_genre["test"] == 2).all() and (per_genre["valid"] == 2).all()
    _disjoint(a)
    with pytest.raises(UserError, match="data.ratios"):
        index_gtzan(cfg(tmp_path, ratios=[0.5, 0.2, 0.2]))


def test_kfold_partitions_clips_and_rotates(tmp_path):
    make_gtzan(tmp_path, per_genre=5, seconds=1.2)
    tests = []
    for fold in range(5):
        ix = index_gtzan(cfg(tmp_path, split="kfold", folds=5, fold=fold))
        sets = _disjoint(ix)
        assert ix.per_split() == {"train": 30, "valid": 10, "test": 10}
        assert (ix.split("test").groupby("genre").size() == 1).all()
        tests.append(sets["test"])
        if fold:
            assert prev_valid == sets["test"]  # noqa: F821 - fold i's validation is fold i+1's test
        prev_valid = sets["valid"]  # noqa: F841
    assert set().union(*tests) == set(ix.table["clip_id"])
    assert sum(map(len, tests)) == 50
    with pytest.raises(UserError, match="data.fold must be in 0..4"):
        index_gtzan(cfg(tmp_path, split="kfold", folds=5, fold=5))


def test_fault_filtered_split_uses_the_published_lists(tmp_path):
    lists = fault_filtered_lists()
    assert [len(lists[s]) for s in ("train", "valid", "test")] == [443, 197, 290]
    top = tmp_path / "genres"
    chosen = {"train": lists["train"][:3], "valid": lists["valid"][:2], "test": lists["test"][:2]}
    for ids in chosen.values():
        for cid in ids:
            write_clip(top / cid.split(".")[0] / f"{cid}.wav", seconds=1.2)
    every = {c for v in lists.values() for c in v}
    unlisted = next(f"{g}.{i:05d}" for g in GENRES for i in range(100)
                    if f"{g}.{i:05d}" not in every)
    write_clip(top / unlisted.split(".")[0] / f"{unlisted}.wav", seconds=1.2)
    ix = index_gtzan(cfg(tmp_path, split="fault_filtered"))
    assert ix.per_split() == {"train": 3, "valid": 2, "test": 2, UNUSED: 1}
    rep = ix.info["split_report"]
    assert rep["missing"] == {"train": 440, "valid": 195, "test": 288}
    assert rep["unlisted"] == [unlisted]
    for s, ids in chosen.items():
        assert set(ix.split(s)["clip_id"]) == set(ids)


def test_fault_filtered_reports_a_listed_clip_that_does_not_decode(tmp_path):
    """jazz.00054 is listed for training and broken in the common re-upload."""
    top = make_gtzan(tmp_path, layout="reupload", genres=("jazz",), per_genre=1, seconds=1.2)
    (top / "jazz" / "jazz.00054.wav").write_bytes(b"")
    ix = index_gtzan(cfg(tmp_path, split="fault_filtered"))
    assert "jazz.00054" in fault_filtered_lists()["train"]
    assert any(s["path"].endswith("jazz.00054.wav") for s in ix.skipped)
    assert ix.info["split_report"]["found"]["train"] == len(ix.split("train"))
    assert "jazz.00054" not in set(ix.table["clip_id"])


def test_real_clips_index(shared_data):
    ix = index_gtzan(cfg(shared_data / "gtzan-mini-dev", split="fault_filtered", min_seconds=3.0))
    assert len(ix) == 50 and ix.skipped == []
    assert set(ix.per_label().values()) == {5}
    assert ix.info["ignored"][".mf"] >= 10
    rep = ix.info["split_report"]
    found = sum(rep["found"].values())
    assert found + len(rep["unlisted"]) == 50 and len(rep["unlisted"]) > 0
    assert isinstance(ix.table, pd.DataFrame)
