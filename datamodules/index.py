"""The table every dataset indexer produces, and the split names it may use."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pandas as pd

SPLITS = ("train", "valid", "test")
# Clips a protocol leaves out (e.g. GTZAN clips in none of the fault-filtered lists).
UNUSED = "unused"
COLUMNS = ("clip_id", "path", "label", "genre", "split", "artist")


@dataclass
class ClipIndex:
    """One dataset's clips.

    ``table`` has one row per usable audio file with columns ``clip_id`` (str), ``path``
    (absolute str), ``label`` (int, position in ``labels``), ``genre`` (str), ``split``
    (``train``/``valid``/``test``/``unused``) and ``artist`` (str or empty). ``skipped``
    lists files that were found but not used, as ``{"path", "reason"}``. ``info`` holds
    dataset-specific facts for reports (layout, split report, ignored litter).
    """

    dataset: str
    labels: list[str]
    table: pd.DataFrame
    skipped: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        missing = [c for c in COLUMNS if c not in self.table.columns]
        if missing:
            raise ValueError(f"ClipIndex table lacks columns {missing}")
        self.table = self.table.loc[:, list(COLUMNS)].reset_index(drop=True)
        dup = self.table["clip_id"][self.table["clip_id"].duplicated()]
        if len(dup):
            raise ValueError(f"duplicate clip ids in {self.dataset}: {sorted(dup)[:5]}")

    def __len__(self) -> int:
        return len(self.table)

    def split(self, name: str) -> pd.DataFrame:
        return self.table[self.table["split"] == name]

    def per_split(self) -> dict[str, int]:
        counts = self.table["split"].value_counts()
        out = {s: int(counts.get(s, 0)) for s in SPLITS}
        if counts.get(UNUSED, 0):
            out[UNUSED] = int(counts[UNUSED])
        return out

    def per_label(self) -> dict[str, int]:
        counts = self.table["genre"].value_counts()
        return {g: int(counts.get(g, 0)) for g in self.labels}

    def fingerprint(self) -> str:
        """Hash of the clip list (ids, paths, labels), independent of the split protocol."""
        h = hashlib.sha256()
        for row in self.table.itertuples(index=False):
            h.update(f"{row.clip_id}\t{row.path}\t{row.label}\n".encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        return {
            "dataset": self.dataset,
            "clips": len(self),
            "labels": list(self.labels),
            "per_split": self.per_split(),
            "per_label": self.per_label(),
            "skipped": list(self.skipped),
            **self.info,
        }
