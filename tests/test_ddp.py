"""Two-process DDP on CPU (gloo), as a cluster job would run it: one command, Lightning
launches the second rank; rank 0 builds the feature cache, the other waits and reuses it."""
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TINY_INTERPRETABILITY, last_json, make_gtzan, run_cli


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_and_vote_per_clip(tmp_path):
    root = tmp_path / "gtzan"
    make_gtzan(root, per_genre=4, seconds=6.0)
    env = {"MLFI_OUTPUT_DIR": str(tmp_path / "out"), "MLFI_CACHE_DIR": str(tmp_path / "cache")}
    r = run_cli("experiments.train", "data=gtzan", f"data.root={root}", "data.split=random",
                "data.clip_seconds=6.0", "data.min_seconds=1.0", "data.batch_size=16",
                "data.num_workers=0", "cache.workers=0", "backbone.channels=[4,8,8,8]",
                "model=mid_two_way", "trainer=ddp", "trainer.accelerator=cpu",
                "trainer.devices=2", "trainer.precision=32-true", "trainer.max_epochs=2",
                "callbacks.ablation.max_segments=24", *TINY_INTERPRETABILITY, env=env,
                timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    s = last_json(r.stdout)
    (test_row,) = pd.read_csv(Path(s["run_dir"]) / "metrics.csv").dropna(
        subset=["test/acc_clip"]).to_dict("records")
    assert s["test/acc_clip"] == pytest.approx(test_row["test/acc_clip"], abs=1e-6)
    caches = list((tmp_path / "cache").glob("gtzan-*"))
    caches = [c for c in caches if c.is_dir() and not c.name.endswith(".partial")]
    assert len(caches) == 1  # one cache, built once
    manifest = json.loads((caches[0] / "manifest.json").read_text())
    assert manifest["complete"] is True
    run = s["run_dir"]
    assert len(list((tmp_path / "out" / "runs").iterdir())) == 1  # both ranks, one run dir
    metrics = pd.read_csv(f"{run}/metrics.csv")
    assert metrics["val/acc_clip"].notna().sum() == 2
    # Clip voting merged both ranks' segments: 10 test clips, every one voted once.
    ev = run_cli("experiments.evaluate", f"checkpoint={s['checkpoint']}", env=env)
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert last_json(ev.stdout)["test/acc_clip"] == pytest.approx(s["test/acc_clip"], abs=1e-6)
