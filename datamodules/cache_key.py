"""What decides a feature cache's contents, its directory name, and its errors.

The key (:func:`cache_key`) holds the dataset name, the clip list fingerprint
(:meth:`ClipIndex.fingerprint`), the feature parameters that change outputs
(:meth:`FeatureParams.key_dict`), :data:`EXTRACTOR_VERSION`, the audio parameters
(sample_rate, clip_seconds, min_seconds, silence_db) and the storage dtype; its sha256
names the directory ``<cache_root>/<dataset>-<12 hex>``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from datamodules.features import EXTRACTOR_VERSION, FeatureParams
from datamodules.index import ClipIndex

CACHE_FORMAT = 1
AUDIO_DEFAULTS = {"sample_rate": 22050, "clip_seconds": 30.0, "min_seconds": 3.0,
                  "silence_db": -60.0}


class CacheError(RuntimeError):
    """A feature cache that cannot be used: names the directory, the problem and the fix."""

    def __init__(self, directory: str | os.PathLike, problem: str, rebuild: str = ""):
        self.dir = str(directory)
        self.problem = problem
        self.rebuild = rebuild
        msg = f"feature cache {self.dir}: {problem}"
        if rebuild:
            msg += f"\n  rebuild it with: {rebuild}"
        super().__init__(msg)


def audio_params(audio: Mapping | None, feature_params: FeatureParams | None = None) -> dict:
    """Normalise the decode parameters; unknown keys raise ``ValueError``."""
    audio = dict(audio or {})
    unknown = sorted(set(audio) - set(AUDIO_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown audio parameter(s) {unknown}; valid: {list(AUDIO_DEFAULTS)}")
    a = {**AUDIO_DEFAULTS, **audio}
    if a["clip_seconds"] is None or float(a["clip_seconds"]) <= 0:
        raise ValueError("the feature cache needs a fixed clip length: audio.clip_seconds > 0")
    a = {"sample_rate": int(a["sample_rate"]), "clip_seconds": float(a["clip_seconds"]),
         "min_seconds": float(a["min_seconds"]), "silence_db": float(a["silence_db"])}
    if feature_params is not None and feature_params.sample_rate != a["sample_rate"]:
        raise ValueError(f"feature sample_rate={feature_params.sample_rate} differs from the "
                         f"audio sample_rate={a['sample_rate']}")
    return a


def dtype_name(dtype) -> str:
    """The storage dtype's name; only float types are allowed."""
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"cache dtype must be a float type (float16/float32), got {dtype!r}")
    return dt.name


def cache_key(index: ClipIndex, feature_params, audio: Mapping, dtype="float16") -> dict:
    """Everything that decides the cache's contents (hashed into the directory name)."""
    fp = FeatureParams.from_dict(feature_params)
    return {
        "format": CACHE_FORMAT,
        "dataset": index.dataset,
        "clips_fingerprint": index.fingerprint(),
        "features": fp.key_dict(),
        "extractor_version": EXTRACTOR_VERSION,
        "audio": audio_params(audio, fp),
        "dtype": dtype_name(dtype),
    }


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def cache_dir_for(index: ClipIndex, feature_params, audio: dict, cache_root,
                  dtype="float16") -> Path:
    """``<cache_root>/<dataset>-<12 hex>`` for these clips and parameters."""
    key = cache_key(index, feature_params, audio, dtype)
    return Path(cache_root).expanduser().absolute() / f"{index.dataset}-{key_hash(key)}"


def rebuild_command(directory, dataset: str, rebuild_hint: str = "") -> str:
    """``rm -rf DIR && <hint>`` (the hint defaults to ``experiments.prepare``)."""
    rm = f"rm -rf {shlex.quote(str(directory))}"
    if rebuild_hint.strip().startswith("rm "):
        return rebuild_hint.strip()
    cmd = rebuild_hint.strip() or f"python -m experiments.prepare data={dataset}"
    return f"{rm} && {cmd}"
