"""GTZAN indexer: finds the 10 genre folders under ``data.root`` in any known layout.

Layouts (docs/DATASETS.md): ``genres/<genre>/<genre>.00000.au`` (Marsyas archive, with
``*.mf`` and a README), ``Data/genres_original/<genre>/<genre>.00000.wav`` (the common
re-upload, beside ``images_original/`` and feature CSVs), or the genre folders directly.
macOS litter (``.DS_Store``, AppleDouble ``._*``) and non-audio files are ignored.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

import pandas as pd

from .audio import AUDIO_EXTENSIONS, AudioDecodeError, probe_audio
from .errors import DatasetNotFoundError, UserError
from .index import ClipIndex
from .splits import assign_fault_filtered, assign_random_or_kfold

GENRES = ("blues", "classical", "country", "disco", "hiphop",
          "jazz", "metal", "pop", "reggae", "rock")
GTZAN_EXTENSIONS = (".wav", ".au")
CLIP_RE = re.compile(r"^(?P<genre>[a-z]+)\.(?P<num>\d{5})$")
HOW_TO_GET = ("GTZAN cannot be downloaded automatically (the original URL is dead): put a "
              "copy (genres.tar.gz from Marsyas, or the Data/genres_original re-upload) under "
              "that folder, or point data.root at it")
_SKIP_DIRS = {"images_original", "__MACOSX"}


def find_genre_root(root: Path) -> Path:
    """The directory holding the genre folders. Raises DatasetNotFoundError."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"GTZAN not found: {root} does not exist. {HOW_TO_GET}.")
    candidates: dict[Path, set[str]] = defaultdict(set)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        d = Path(dirpath)
        if d.name in GENRES and any(f.lower().endswith(GTZAN_EXTENSIONS) and not f.startswith("._")
                                    for f in filenames):
            candidates[d.parent].add(d.name)
    if not candidates:
        raise DatasetNotFoundError(
            f"GTZAN not found: no genre folders ({', '.join(GENRES)}) with .wav/.au files "
            f"under {root}. {HOW_TO_GET}.")
    best = max(len(g) for g in candidates.values())
    tops = sorted(p for p, g in candidates.items() if len(g) == best)
    if len(tops) > 1:
        raise UserError(
            f"several GTZAN copies under {root}: {', '.join(map(str, tops))}. "
            f"Set data.root to one of them.")
    return tops[0]


def scan_gtzan(root: str | os.PathLike, min_seconds: float = 1.0
               ) -> tuple[pd.DataFrame, list[dict], dict]:
    """(table without split, skipped files, info). Header-level checks only; files that
    fail a full decode are reported later by the feature-cache build."""
    root = Path(root).expanduser().resolve()
    genre_root = find_genre_root(root)
    rows, skipped = [], []
    ignored: dict[str, int] = defaultdict(int)
    for genre in GENRES:
        gdir = genre_root / genre
        if not gdir.is_dir():
            continue
        for f in sorted(gdir.iterdir()):
            name = f.name
            if f.is_dir():
                ignored["folders"] += 1
                continue
            if name.startswith("._"):
                skipped.append({"path": str(f), "reason": "macOS AppleDouble metadata file, "
                                "not audio (ignored)"})
                continue
            if name == ".DS_Store" or not name.lower().endswith(AUDIO_EXTENSIONS):
                ignored[f.suffix.lower() or name] += 1
                continue
            stem = name.rsplit(".", 1)[0]
            m = CLIP_RE.match(stem)
            if not f.suffix.lower() in GTZAN_EXTENSIONS:
                skipped.append({"path": str(f), "reason": f"{f.suffix} is not a GTZAN format "
                                "(.wav or .au)"})
                continue
            try:  # what is wrong with the content comes before what is wrong with the name
                probe_audio(f, min_seconds=min_seconds)
            except AudioDecodeError as e:
                skipped.append({"path": str(f), "reason": e.reason})
                continue
            if not m or m["genre"] != genre:
                skipped.append({"path": str(f), "reason": f"file name is not a GTZAN clip id "
                                f"'{genre}.<5 digits>'"})
                continue
            rows.append({"clip_id": stem, "path": str(f), "label": GENRES.index(genre),
                         "genre": genre, "split": "", "artist": ""})
    # Litter outside the genre folders (.mf collections, README, feature CSVs, images).
    for f in genre_root.iterdir():
        if f.is_file():
            ignored[f.suffix.lower() or f.name] += 1
    table = pd.DataFrame(rows, columns=["clip_id", "path", "label", "genre", "split", "artist"])
    dup = table["clip_id"][table["clip_id"].duplicated(keep=False)]
    if len(dup):  # e.g. blues.00000.wav beside blues.00000.au
        first = ~table["clip_id"].duplicated(keep="first")
        for p in table.loc[~first, "path"]:
            skipped.append({"path": p, "reason": "another file has the same clip id"})
        table = table[first]
    info = {"root": str(root), "genre_root": str(genre_root),
            "layout": str(genre_root.relative_to(root)) if genre_root != root else ".",
            "ignored": dict(sorted(ignored.items()))}
    return table, skipped, info


def index_gtzan(data_cfg, dataset: str = "gtzan") -> ClipIndex:
    """Index a GTZAN-layout folder and assign ``data.split``."""
    table, skipped, info = scan_gtzan(data_cfg["root"],
                                      min_seconds=data_cfg.get("min_seconds", 1.0))
    split = data_cfg.get("split", "fault_filtered")
    if split == "fault_filtered":
        table["split"], info["split_report"] = assign_fault_filtered(table)
    else:
        table["split"] = assign_random_or_kfold(table, data_cfg, dataset, split,
                                                others=("fault_filtered",))
    info["split"] = split
    return ClipIndex(dataset=dataset, labels=list(GENRES), table=table, skipped=skipped, info=info)
