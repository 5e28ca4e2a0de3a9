"""Dataset-indexer registry: ``data.name`` -> indexer returning a :class:`ClipIndex`."""
from __future__ import annotations

from typing import Callable

from .errors import UserError
from .fma import index_fma_small
from .gtzan import index_gtzan
from .index import ClipIndex
from .synth_sync import index_synth_sync


def index_synth(data_cfg, dataset: str = "synth") -> ClipIndex:
    """Generate the demo set once (GTZAN layout) under ``data.root``, then index it as GTZAN."""
    from .synth import generate_synth

    s = data_cfg.get("synth", {}) or {}
    report = generate_synth(data_cfg["root"], clips_per_class=int(s.get("clips_per_class", 30)),
                            seed=int(s.get("seed", 0)), sample_rate=int(data_cfg["sample_rate"]),
                            seconds=float(data_cfg["clip_seconds"]),
                            workers=int(s.get("workers", 2)))
    index = index_gtzan(data_cfg, dataset=dataset)
    index.info["generated"] = bool(report.get("generated"))
    return index


INDEXERS: dict[str, Callable[..., ClipIndex]] = {
    "gtzan": index_gtzan,
    "fma_small": index_fma_small,
    "synth": index_synth,
    "synth_sync": index_synth_sync,
}


def build_index(data_cfg) -> ClipIndex:
    name = data_cfg["name"]
    if name not in INDEXERS:
        raise UserError(f"unknown data.name {name!r}: choose one of {', '.join(INDEXERS)}")
    return INDEXERS[name](data_cfg, dataset=name)
