"""The feature cache: build/reuse, skipped files, keys, corruption, kill + resume, two builders."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from datamodules.audio import load_audio
from datamodules.cache import (
    CacheError,
    FeatureCache,
    build_or_load,
    cache_dir_for,
    load_cache,
)
from datamodules.features import FeatureExtractor, FeatureParams
from datamodules.index import ClipIndex
from datamodules.parallel_decode import _Throttle

REPO = Path(__file__).resolve().parents[1]
SR = 22050
AUDIO = {"sample_rate": SR, "clip_seconds": 3.0, "min_seconds": 1.0, "silence_db": -60.0}
FEATS = {"names": ["mel", "chroma"], "batch_size": 2}
HINT = "python -m experiments.prepare data=toy data.root=/somewhere"


def write_tone(path: Path, seconds=3.0, freq=440.0, seed=0, sr=SR) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))
    sf.write(str(path), y.astype(np.float32), sr, subtype="PCM_16")
    return path


def make_index(root: Path, n_good=6, bad=False, seconds=3.0) -> ClipIndex:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_good):
        p = write_tone(root / f"clip{i}.wav", seconds=seconds, freq=110.0 * (i + 1), seed=i)
        rows.append((f"g{i % 2}.{i:05d}", p))
    if bad:
        empty = root / "empty.wav"
        empty.write_bytes(b"")
        text = root / "text.wav"
        text.write_text("this is not audio\n" * 50)
        silent = root / "silent.wav"
        sf.write(str(silent), np.zeros(SR * 3, np.float32), SR, subtype="PCM_16")
        # interleaved with good clips: rows must stay aligned with the index
        rows.insert(1, ("bad.00001", empty))
        rows.insert(4, ("bad.00002", text))
        rows.append(("bad.00003", silent))
    table = pd.DataFrame({
        "clip_id": [r[0] for r in rows], "path": [str(r[1]) for r in rows],
        "label": [int(r[0].startswith("g1")) for r in rows],
        "genre": ["g1" if r[0].startswith("g1") else "g0" for r in rows],
        "split": ["train", "valid", "test"] * (len(rows) // 3) + ["train"] * (len(rows) % 3),
        "artist": [""] * len(rows)})
    return ClipIndex(dataset="toy", labels=["g0", "g1"], table=table)


def reference(path: str, params=FEATS) -> dict[str, np.ndarray]:
    wave = load_audio(path, **AUDIO).wave
    return {k: v[0].numpy() for k, v in FeatureExtractor(params)(wave[None]).items()}


def assert_rows_match(cache: FeatureCache):
    for row in cache.index.itertuples():
        ref = reference(row.path)
        for name, arr in cache.arrays.items():
            np.testing.assert_allclose(arr[row.row].astype(np.float32), ref[name],
                                       rtol=2e-3, atol=2e-3 if name == "chroma" else 0.05)


def test_build_then_reuse(tmp_path):
    index = make_index(tmp_path / "audio")
    root = tmp_path / "cache"
    cache = build_or_load(index, FEATS, AUDIO, root, workers=2, progress=False,
                          rebuild_hint=HINT)
    assert cache.built and cache.dir.is_dir() and cache.dir.parent == root.absolute()
    assert cache.dir.name.startswith("toy-") and len(cache.dir.name) == len("toy-") + 12
    assert not Path(str(cache.dir) + ".partial").exists()
    T = 1 + 3 * SR // 512
    assert {k: v.shape for k, v in cache.arrays.items()} == {"mel": (6, 128, T),
                                                             "chroma": (6, 12, T)}
    assert all(a.dtype == np.float16 for a in cache.arrays.values())
    assert list(cache.index["clip_id"]) == list(index.table["clip_id"])
    assert (cache.index["padded_seconds"] == 0).all() and cache.skipped == []
    m = cache.manifest
    assert m["complete"] is True and m["clips"] == 6 and m["skipped"] == []
    assert set(m["versions"]) >= {"torch", "torchaudio", "librosa", "numpy", "soundfile"}
    assert m["rebuild_command"].startswith("rm -rf ") and HINT in m["rebuild_command"]
    assert m["features"]["mel"]["shape"] == [6, 128, T] and m["build_seconds"] > 0
    assert_rows_match(cache)

    again = build_or_load(index, {**FEATS, "batch_size": 4}, AUDIO, root, workers=2,
                          progress=False)
    assert not again.built and again.dir == cache.dir
    for k in cache.arrays:
        np.testing.assert_array_equal(again.arrays[k], cache.arrays[k])
    opened = load_cache(cache.dir)
    assert len(opened) == 6 and opened.names == ["mel", "chroma"]
    assert opened.build_seconds == pytest.approx(m["build_seconds"])


def test_short_clip_is_padded_and_recorded(tmp_path):
    index = make_index(tmp_path / "audio", n_good=2, seconds=2.0)
    cache = build_or_load(index, FEATS, AUDIO, tmp_path / "cache", workers=0, progress=False)
    assert cache.index["padded_seconds"].tolist() == pytest.approx([1.0, 1.0])


def test_undecodable_files_are_skipped_with_reasons(tmp_path):
    index = make_index(tmp_path / "audio", bad=True)
    cache = build_or_load(index, FEATS, AUDIO, tmp_path / "cache", workers=2, progress=False)
    assert len(index) == 9 and len(cache) == 6
    assert all(a.shape[0] == 6 for a in cache.arrays.values())
    assert not cache.index["clip_id"].str.startswith("bad").any()
    reasons = {Path(s["path"]).name: s["reason"] for s in cache.skipped}
    assert set(reasons) == {"empty.wav", "text.wav", "silent.wav"}
    assert "empty" in reasons["empty.wav"] and "silent" in reasons["silent.wav"]
    assert "not a readable audio file" in reasons["text.wav"]
    assert cache.manifest["clips_indexed"] == 9
    assert_rows_match(cache)  # no holes, no shift after the failures
    again = build_or_load(index, FEATS, AUDIO, tmp_path / "cache", workers=0, progress=False)
    assert not again.built and again.skipped == cache.skipped


def test_nothing_decodes_is_an_error(tmp_path):
    d = tmp_path / "audio"
    d.mkdir()
    (d / "a.wav").write_bytes(b"")
    index = ClipIndex("toy", ["g0"], pd.DataFrame({
        "clip_id": ["a"], "path": [str(d / "a.wav")], "label": [0], "genre": ["g0"],
        "split": ["train"], "artist": [""]}))
    with pytest.raises(CacheError, match="none of the 1 clips decoded"):
        build_or_load(index, FEATS, AUDIO, tmp_path / "cache", workers=0, progress=False)


def test_changed_parameter_gives_new_dir(tmp_path):
    index = make_index(tmp_path / "audio", n_good=2)
    root = tmp_path / "cache"
    base = cache_dir_for(index, FEATS, AUDIO, root)
    assert base == cache_dir_for(index, {**FEATS, "batch_size": 7, "device": "cuda"}, AUDIO,
                                 root)
    assert base == cache_dir_for(index, FeatureParams.from_dict(FEATS), AUDIO, root)
    others = [cache_dir_for(index, {**FEATS, "n_mels": 64}, AUDIO, root),
              cache_dir_for(index, {**FEATS, "names": ["mel"]}, AUDIO, root),
              cache_dir_for(index, {**FEATS, "top_db": 80}, AUDIO, root),
              cache_dir_for(index, FEATS, {**AUDIO, "clip_seconds": 2.0}, root),
              cache_dir_for(index, FEATS, {**AUDIO, "silence_db": -50.0}, root),
              cache_dir_for(index, FEATS, AUDIO, root, dtype="float32"),
              cache_dir_for(make_index(tmp_path / "audio", n_good=1), FEATS, AUDIO, root)]
    assert len({base, *others}) == len(others) + 1
    a = build_or_load(index, FEATS, AUDIO, root, workers=0, progress=False)
    b = build_or_load(index, {**FEATS, "n_mels": 64}, AUDIO, root, workers=0, progress=False)
    assert a.built and b.built and a.dir != b.dir and b.arrays["mel"].shape[1] == 64
    assert a.dir == base and b.dir == others[0]
    with pytest.raises(ValueError, match="unknown audio parameter"):
        cache_dir_for(index, FEATS, {**AUDIO, "sr": 1}, root)
    with pytest.raises(ValueError, match="sample_rate"):
        cache_dir_for(index, FEATS, {**AUDIO, "sample_rate": 16000}, root)


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("built")
    index = make_index(tmp / "audio", n_good=3)
    cache = build_or_load(index, FEATS, AUDIO, tmp / "cache", workers=0, progress=False,
                          rebuild_hint=HINT)
    return index, cache


def _corrupt_copy(built_cache, tmp_path, corrupt):
    index, cache = built_cache
    root = tmp_path / "cache"
    d = root / cache.dir.name
    shutil.copytree(cache.dir, d)
    corrupt(d)
    return index, root, d


def _truncate(d: Path):
    p = d / "mel.npy"
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size // 2)


def _incomplete(d: Path):
    m = json.loads((d / "manifest.json").read_text())
    del m["complete"]
    (d / "manifest.json").write_text(json.dumps(m))


def _index_rows(d: Path):
    lines = (d / "index.csv").read_text().splitlines()
    (d / "index.csv").write_text("\n".join(lines[:-1]) + "\n")


def _missing_array(d: Path):
    (d / "chroma.npy").unlink()


@pytest.mark.parametrize("corrupt,what", [
    (_truncate, "mel.npy is unreadable or truncated"),
    (_incomplete, '"complete": true'),
    (_index_rows, "index.csv has 2 rows"),
    (_missing_array, "chroma.npy is missing"),
])
def test_corrupted_cache_raises_with_rebuild_command(built_cache, tmp_path, corrupt, what):
    index, root, d = _corrupt_copy(built_cache, tmp_path, corrupt)
    with pytest.raises(CacheError) as e:
        FeatureCache.open(d)
    msg = str(e.value)
    assert str(d) in msg and what in msg
    assert f"rm -rf {d}" in msg and HINT in msg  # from the manifest, or the caller's hint
    assert e.value.dir == str(d) and e.value.rebuild
    with pytest.raises(CacheError) as e2:  # build_or_load does not silently rebuild it
        build_or_load(index, FEATS, AUDIO, root, workers=0, progress=False,
                      rebuild_hint="python -m experiments.prepare data=toy")
    assert str(d) in str(e2.value) and "python -m experiments.prepare data=toy" in str(e2.value)


def test_missing_cache_dir_error(tmp_path):
    with pytest.raises(CacheError, match="does not exist"):
        load_cache(tmp_path / "toy-0123456789ab", rebuild_hint=HINT)


def test_stale_partial_with_garbage_is_rebuilt(tmp_path):
    index = make_index(tmp_path / "audio", n_good=3)
    root = tmp_path / "cache"
    d = cache_dir_for(index, FEATS, AUDIO, root)
    partial = Path(str(d) + ".partial")
    partial.mkdir(parents=True)
    (partial / "progress.json").write_text("{not json")
    (partial / "mel.npy").write_bytes(b"junk")
    cache = build_or_load(index, FEATS, AUDIO, root, workers=0, progress=False)
    assert cache.built and len(cache) == 3 and not partial.exists()
    assert cache.manifest["resumed_from_clip"] is None
    assert_rows_match(cache)


def test_lock_timeout_names_the_lock(tmp_path):
    from filelock import FileLock

    index = make_index(tmp_path / "audio", n_good=1)
    root = tmp_path / "cache"
    d = cache_dir_for(index, FEATS, AUDIO, root)
    root.mkdir()
    with FileLock(str(d) + ".lock"):
        t0 = time.perf_counter()
        with pytest.raises(CacheError, match="timed out after 0.3 s waiting for the lock"):
            build_or_load(index, FEATS, AUDIO, root, workers=0, progress=False, timeout_s=0.3)
        assert time.perf_counter() - t0 < 5
    assert build_or_load(index, FEATS, AUDIO, root, workers=0, progress=False).built


# ----------------------------------------------------------------- other processes

SCRIPT = r"""
import json, sys, time
import pandas as pd
from datamodules import cache as C, cache_build
from datamodules.index import ClipIndex
spec = json.load(open(sys.argv[1]))
table = pd.read_csv(spec["table"], dtype=str, keep_default_na=False)
table["label"] = table["label"].astype(int)
index = ClipIndex(spec["dataset"], spec["labels"], table)
def hook(rows):  # after each batch is recorded: report, then slow down or stall
    print(f"rows {rows}", flush=True)
    stall = spec["stall_at"] is not None and rows >= spec["stall_at"]
    time.sleep(600 if stall else spec["sleep"])
cache_build._AFTER_BATCH = hook
print("start", flush=True)
c = C.build_or_load(index, spec["features"], spec["audio"], spec["root"],
                    workers=spec["workers"], progress=False)
print(json.dumps({"built": c.built, "dir": str(c.dir), "n": len(c),
                  "waited": c.waited_seconds}), flush=True)
"""


def _spawn(tmp_path: Path, index: ClipIndex, root: Path, sleep: float = 0.0, features=FEATS,
           workers=1, name="spec", stall_at: int | None = None) -> subprocess.Popen:
    table = tmp_path / f"{name}.csv"
    index.table.to_csv(table, index=False)
    spec = tmp_path / f"{name}.json"
    spec.write_text(json.dumps({"table": str(table), "dataset": index.dataset,
                                "labels": index.labels, "features": features, "audio": AUDIO,
                                "root": str(root), "workers": workers, "sleep": sleep,
                                "stall_at": stall_at}))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(spec)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_build_leaves_no_complete_cache_and_resumes(tmp_path):
    index = make_index(tmp_path / "audio", n_good=6)
    root = tmp_path / "cache"
    feats = {**FEATS, "batch_size": 1}
    d = cache_dir_for(index, feats, AUDIO, root)
    proc = _spawn(tmp_path, index, root, features=feats, stall_at=2)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"builder exited early: {proc.stderr.read()}")
            if line.strip() == "rows 2":
                break
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 in the middle of the build
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert not d.exists(), "a killed build must not leave a cache that looks complete"
    partial = Path(str(d) + ".partial")
    assert (partial / "progress.json").is_file() and not (partial / "manifest.json").exists()
    with pytest.raises(CacheError, match="unfinished build"):
        load_cache(d)

    cache = build_or_load(index, feats, AUDIO, root, workers=0, progress=False)
    assert cache.built and cache.dir == d and not partial.exists()
    assert cache.manifest["resumed_from_clip"] == 2 and len(cache) == 6
    assert_rows_match(cache)
    fresh = build_or_load(index, feats, AUDIO, tmp_path / "fresh", workers=0, progress=False)
    for k in cache.arrays:  # equal up to float16 rounding (thread counts may differ)
        np.testing.assert_allclose(np.asarray(cache.arrays[k], np.float32),
                                   np.asarray(fresh.arrays[k], np.float32), rtol=2e-3, atol=1e-5)


def test_two_processes_build_once(tmp_path):
    index = make_index(tmp_path / "audio", n_good=6)
    root = tmp_path / "cache"
    procs = [_spawn(tmp_path, index, root, sleep=0.5, name=f"p{i}") for i in range(2)]
    outs = []
    for p in procs:
        # A waiter that sat out the lock timeout (cache.timeout_min) would fail here.
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(o["built"] for o in outs) == [False, True], outs
    assert outs[0]["dir"] == outs[1]["dir"] and outs[0]["n"] == outs[1]["n"] == 6
    cache = load_cache(outs[0]["dir"])
    assert cache.manifest["complete"] and len(cache) == 6
    assert not Path(outs[0]["dir"] + ".partial").exists()
    assert_rows_match(cache)


def test_throttle_bounds_work_in_flight():
    it = _Throttle(range(100), window=3)
    taken = []
    gen = iter(it)
    for _ in range(3):
        taken.append(next(gen))
    it.stop.set()
    assert list(gen) == []  # a 4th item needs a release; stopping ends the feeder
    assert taken == [0, 1, 2]


def test_killed_between_manifest_and_rename_is_finished(tmp_path):
    index = make_index(tmp_path / "audio", n_good=2)
    root = tmp_path / "cache"
    cache = build_or_load(index, FEATS, AUDIO, root, workers=0, progress=False)
    partial = Path(str(cache.dir) + ".partial")
    os.rename(cache.dir, partial)  # as if killed just before the final rename
    again = build_or_load(index, FEATS, AUDIO, root, workers=0, progress=False)
    assert again.built and again.dir == cache.dir and not partial.exists()
    assert again.manifest["build_seconds"] == cache.manifest["build_seconds"]
