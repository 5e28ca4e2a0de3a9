"""FMA-Small indexer (Defferrard et al. 2017).

``tracks.csv`` has a two-level header (group, field) and the track id in column 0; the
subset column holds the *smallest* subset containing the track, so FMA-Small is
``('set', 'subset') == 'small'``. Audio lives at ``fma_small/<id[:3]>/<id>.mp3`` (6 digits).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import DatasetNotFoundError, UserError
from .index import ClipIndex

GENRES = ("Electronic", "Experimental", "Folk", "Hip-Hop",
          "Instrumental", "International", "Pop", "Rock")
SPLIT_NAMES = {"training": "train", "validation": "valid", "test": "test"}
# Known broken clips (mdeff/fma issues 8, 36, 44, 70).
BROKEN = {
    98565: "known broken FMA clip: much shorter than 30 s (mdeff/fma issues)",
    98567: "known broken FMA clip: much shorter than 30 s (mdeff/fma issues)",
    98569: "known broken FMA clip: much shorter than 30 s (mdeff/fma issues)",
    99134: "known broken FMA clip: contains no audio (mdeff/fma issues)",
    108925: "known broken FMA clip: contains no audio (mdeff/fma issues)",
    133297: "known broken FMA clip: contains no audio (mdeff/fma issues)",
}
HOW_TO_GET = ("download fma_small.zip and fma_metadata.zip (https://github.com/mdeff/fma) and "
              "unzip both into data.root (or set data.audio_dir / data.metadata_dir)")


def audio_path(audio_dir: Path, track_id: int) -> Path:
    tid = f"{int(track_id):06d}"
    return audio_dir / tid[:3] / f"{tid}.mp3"


def load_tracks(path: Path) -> pd.DataFrame:
    """tracks.csv with its (group, field) header; track id as the integer index."""
    try:
        tracks = pd.read_csv(path, index_col=0, header=[0, 1], low_memory=False)
    except Exception as e:
        raise UserError(f"{path}: cannot read as FMA tracks.csv ({e})") from None
    needed = [("set", "subset"), ("set", "split"), ("track", "genre_top")]
    missing = [c for c in needed if c not in tracks.columns]
    if missing:
        raise UserError(f"{path}: not an FMA tracks.csv, missing columns {missing}")
    tracks.index = tracks.index.astype(int)
    return tracks


def index_fma_small(data_cfg, dataset: str = "fma_small") -> ClipIndex:
    root = Path(data_cfg["root"]).expanduser()
    audio_dir = Path(data_cfg.get("audio_dir") or root / "fma_small").expanduser().resolve()
    meta_dir = Path(data_cfg.get("metadata_dir") or root / "fma_metadata").expanduser().resolve()
    tracks_csv = meta_dir / "tracks.csv"
    if not tracks_csv.is_file():
        raise DatasetNotFoundError(f"FMA-Small not found: {tracks_csv} does not exist; "
                                   f"{HOW_TO_GET}.")
    if not audio_dir.is_dir():
        raise DatasetNotFoundError(f"FMA-Small not found: audio folder {audio_dir} does not "
                                   f"exist; {HOW_TO_GET}.")
    split = data_cfg.get("split", "official")
    if split != "official":
        raise UserError(f"data.split={split!r} is not available for fma_small: use official "
                        "(the artist-filtered 80/10/10 split from tracks.csv)")
    tracks = load_tracks(tracks_csv)
    small = tracks[tracks[("set", "subset")] == "small"]
    rows, skipped = [], []
    for tid, row in small.iterrows():
        path = audio_path(audio_dir, tid)
        if tid in BROKEN:
            skipped.append({"path": str(path), "reason": BROKEN[tid]})
            continue
        genre = row[("track", "genre_top")]
        if genre not in GENRES:
            skipped.append({"path": str(path), "reason": f"genre_top {genre!r} is not one of "
                            "the 8 FMA-Small genres"})
            continue
        s = SPLIT_NAMES.get(row[("set", "split")])
        if s is None:
            skipped.append({"path": str(path),
                            "reason": f"unknown split {row[('set', 'split')]!r}"})
            continue
        if not path.is_file():
            skipped.append({"path": str(path), "reason": "missing on disk (listed in tracks.csv)"})
            continue
        artist = row.get(("artist", "id"), "")
        rows.append({"clip_id": f"{tid:06d}", "path": str(path), "label": GENRES.index(genre),
                     "genre": genre, "split": s,
                     "artist": "" if pd.isna(artist) else str(int(artist))})
    table = pd.DataFrame(rows, columns=["clip_id", "path", "label", "genre", "split", "artist"])
    listed = small[("set", "split")].map(SPLIT_NAMES).value_counts()
    info = {"root": str(root), "audio_dir": str(audio_dir), "metadata_dir": str(meta_dir),
            "split": "official",
            "split_report": {"protocol": "official FMA split (artist-filtered, 80/10/10)",
                             "listed": {s: int(listed.get(s, 0)) for s in SPLIT_NAMES.values()},
                             "tracks_in_subset": int(len(small))}}
    return ClipIndex(dataset=dataset, labels=list(GENRES), table=table, skipped=skipped, info=info)
