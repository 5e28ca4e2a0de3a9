import csv

import pytest

from datamodules.errors import DatasetNotFoundError
from datamodules.fma import GENRES, audio_path, index_fma_small
from tests.conftest import write_clip

# (track_id, subset, split, genre_top, artist_id)
TRACKS = [
    (2, "small", "training", "Hip-Hop", 1),
    (5, "small", "training", "Hip-Hop", 1),
    (10, "small", "validation", "Pop", 6),
    (140, "small", "test", "Folk", 54),
    (141, "small", "test", "Folk", 54),
    (3, "medium", "training", "Hip-Hop", 1),
    (20, "large", "training", "", 7),
    (99134, "small", "training", "Rock", 9),      # known broken: no audio
    (133297, "small", "test", "Electronic", 10),  # known broken: no audio
    (148, "small", "validation", "Experimental", 61),  # listed, audio missing on disk
]


def write_tracks_csv(path):
    """The real layout: a two-row (group, field) header, then a 'track_id' row of empties."""
    cols = [("album", "id"), ("artist", "id"), ("set", "split"), ("set", "subset"),
            ("track", "duration"), ("track", "genre_top"), ("track", "genres")]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([""] + [c[0] for c in cols])
        w.writerow([""] + [c[1] for c in cols])
        w.writerow(["track_id"] + [""] * len(cols))
        for tid, subset, split, genre, artist in TRACKS:
            w.writerow([tid, 1, artist, split, subset, 30, genre, "[21]"])


@pytest.fixture
def fma_root(tmp_path):
    write_tracks_csv(tmp_path / "fma_metadata" / "tracks.csv")
    for tid, subset, *_ in TRACKS:
        if tid != 148:
            write_clip(audio_path(tmp_path / "fma_small", tid), seconds=1.5)
    return tmp_path


def test_audio_path_layout(tmp_path):
    assert audio_path(tmp_path, 2) == tmp_path / "000" / "000002.mp3"
    assert audio_path(tmp_path, 133297) == tmp_path / "133" / "133297.mp3"


def test_official_split_labels_and_broken_ids(fma_root):
    ix = index_fma_small({"root": str(fma_root), "split": "official"})
    assert ix.labels == list(GENRES) and len(GENRES) == 8
    assert sorted(ix.table["clip_id"]) == ["000002", "000005", "000010", "000140", "000141"]
    assert ix.per_split() == {"train": 2, "valid": 1, "test": 2}
    row = ix.table.set_index("clip_id").loc["000010"]
    assert row["genre"] == "Pop" and row["label"] == GENRES.index("Pop") and row["artist"] == "6"
    reasons = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in ix.skipped}
    assert "no audio" in reasons["099134.mp3"] and "no audio" in reasons["133297.mp3"]
    assert "missing on disk" in reasons["000148.mp3"]
    assert ix.info["split_report"]["listed"] == {"train": 3, "valid": 2, "test": 3}


def test_artists_do_not_cross_splits(fma_root):
    ix = index_fma_small({"root": str(fma_root), "split": "official"})
    by_artist = ix.table.groupby("artist")["split"].nunique()
    assert (by_artist == 1).all()


def test_dirs_are_overridable_and_missing_metadata_is_clear(fma_root, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    (fma_root / "fma_metadata").rename(other / "meta")
    with pytest.raises(DatasetNotFoundError, match="tracks.csv does not exist.*fma_metadata.zip"):
        index_fma_small({"root": str(fma_root), "split": "official"})
    ix = index_fma_small({"root": str(fma_root), "metadata_dir": str(other / "meta"),
                          "split": "official"})
    assert len(ix) == 5
