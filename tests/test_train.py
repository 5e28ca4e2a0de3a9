"""train -> evaluate -> predict through their entry points (in-process, as the command line
calls them), on a tiny GTZAN-layout fixture, plus kill -9 and resume=auto."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from tests.conftest import (
    REPO,
    TINY_GTZAN_RUN,
    TINY_INTERPRETABILITY,
    call_cli,
    last_json,
    make_gtzan,
    run_cli,
    tone,
)

TINY = [*TINY_GTZAN_RUN, *TINY_INTERPRETABILITY, "callbacks.ablation.max_segments=24",
        "trainer.max_epochs=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("gtzan")
    make_gtzan(root, per_genre=4, seconds=6.0)
    out = tmp_path_factory.mktemp("out")
    # Module scope runs before the per-test isolation: every path is set here.
    env = {"MLFI_OUTPUT_DIR": str(out), "MLFI_CACHE_DIR": str(out / "cache"),
           "MLFI_DATA_DIR": str(out / "data")}
    r = call_cli("experiments.train", *TINY, f"data.root={root}", "model=mid_two_way",
                 "seed=3", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return root, out, env, last_json(r.stdout), r


def test_train_writes_a_complete_run_directory(trained):
    root, out, env, s, r = trained
    assert s["mode"] == "mid_two_way" and s["seed"] == 3 and s["seconds"] > 0
    run = s["run_dir"]
    from pathlib import Path
    run = Path(run)
    assert run.parent == out / "runs"
    assert run.name.startswith("gtzan-mid_two_way-parallel_cnn-tap2-seed3-")
    assert Path(s["checkpoint"]).is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file() and "mid_two_way" in (run / "config.yaml").read_text()
    metrics = pd.read_csv(run / "metrics.csv")
    assert {"val/acc_clip", "train/loss", "test/acc_clip"} <= set(metrics.columns)
    # The summary's figures are the logged ones: the best validation epoch's clip accuracy
    # (what picked the checkpoint) and the single test epoch.
    assert s["val/acc_clip"] == pytest.approx(metrics["val/acc_clip"].max(), abs=1e-6)
    (test_row,) = metrics.dropna(subset=["test/acc_clip"]).to_dict("records")
    for k in ("test/acc_clip", "test/acc_segment", "test/f1_macro"):
        assert s[k] == pytest.approx(test_row[k], abs=1e-6)
    assert json.loads((run / "summary.json").read_text())["checkpoint"] == s["checkpoint"]
    assert (run / "figures" / "confusion_test.png").stat().st_size > 10_000
    # Per-clip test predictions (what a paired McNemar test reads) agree with the score.
    pred = pd.read_csv(run / "predictions_test.csv")
    assert s["predictions_csv"] == str(run / "predictions_test.csv") and len(pred) == 10
    assert pred["correct"].mean() == pytest.approx(s["test/acc_clip"], abs=1e-6)
    # Capacity and protocol, as the sweep tables show them.
    from lightning_modules import load_model

    assert s["params"] == sum(p.numel() for p in load_model(s["checkpoint"]).parameters())
    assert s["mflops"] > 0 and s["channels"] == [4, 8, 8, 8]
    assert s["protocol"]["split"] == "random" and s["protocol"]["artist_filtered"] is False
    assert s["protocol_label"].startswith("gtzan random split, not artist-filtered, ")
    assert list((run / "figures" / "gradcam").glob("final_*.png"))
    assert (run / "ablation.csv").is_file() and "ablation/acc_mel_zeroed" in s
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    assert list(offline[0].glob("files/media/images/**/*.png"))
    # The run config reaches W&B once, as itself, not again as the model's hyperparameters
    # (whose keys, e.g. backbone_kwargs, would then be in the run's record).
    (record,) = offline[0].glob("*.wandb")
    data = record.read_bytes()
    assert data.count(b"warmup_epochs") == 1 and b"backbone_kwargs" not in data
    # Progress and log lines went to stderr; stdout holds only the JSON line.
    assert r.stdout.strip().count("\n") == 0 and "test clip accuracy" in r.stderr


def test_evaluate_reports_per_class_metrics_and_confusion(trained):
    _, out, env, s, _ = trained
    r = call_cli("experiments.evaluate", f"checkpoint={s['checkpoint']}", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    e = last_json(r.stdout)
    assert e["test/acc_clip"] == pytest.approx(s["test/acc_clip"], abs=1e-6)
    assert len(e["per_class"]) == 10 and e["clips"] == 10
    assert e["protocol"]["clips"]["test"] == 10 and "random split" in e["protocol_label"]
    assert sum(c["support"] for c in e["per_class"]) == 10
    pred = pd.read_csv(e["predictions_csv"])
    assert len(pred) == 10 and (pred["predicted"] == pred["genre"]).mean() == pytest.approx(
        e["test/acc_clip"])
    assert "precision" in r.stderr  # the table for the person at the terminal
    r = call_cli("experiments.evaluate", f"checkpoint={s['checkpoint']}", "split=valid",
                 env=env)
    assert r.returncode == 0 and "valid/acc_clip" in last_json(r.stdout)


def test_predict_any_format_and_reports_bad_files(trained, tmp_path):
    _, out, env, s, _ = trained
    x = tone(4.0, sr=44100, freq=330.0)
    sf.write(str(tmp_path / "stereo.flac"), np.stack([x, 0.5 * x], 1), 44100)
    sf.write(str(tmp_path / "short.wav"), tone(1.0, sr=8000), 8000)
    (tmp_path / "notes.wav").write_text("not audio")
    files = ",".join(str(tmp_path / f) for f in ("stereo.flac", "notes.wav", "short.wav"))
    r = call_cli("experiments.predict", f"checkpoint={s['checkpoint']}", f"files=[{files}]",
                 env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    p = last_json(r.stdout)["predictions"]
    assert [q["file"].rsplit("/", 1)[1] for q in p] == ["stereo.flac", "notes.wav", "short.wav"]
    assert p[0]["genre"] in p[0]["probabilities"] and p[0]["channels"] == 2
    assert sum(p[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert "not a readable audio file" in p[1]["error"] and "genre" not in p[1]
    assert p[2]["segments"] == 1 and p[2]["source_rate"] == 8000


def test_missing_checkpoint_is_one_clear_line(tmp_path):
    r = run_cli("experiments.predict", f"checkpoint={tmp_path}/nope.ckpt", "files=[a.wav]")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_killed_run_resumes_from_last_checkpoint(trained):
    root, out, env, _, _ = trained
    args = [*TINY, f"data.root={root}", "model=late_fusion", "trainer.max_epochs=6",
            "callbacks.gradcam.enabled=false", "callbacks.ablation.enabled=false",
            "callbacks.interpretability.enabled=false", "logger.wandb.enabled=false",
            "train.resume=auto"]
    proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *args], cwd=REPO,
                            env={**__import__("os").environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = out / "runs"
    deadline = time.time() + 240
    last = None
    while time.time() < deadline and proc.poll() is None:
        found = list(runs.glob("gtzan-late_fusion-*/checkpoints/last.ckpt"))
        if found:
            last = found[0]
            break
        time.sleep(0.05)
    assert last is not None, "no checkpoint was written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = last.parent.parent
    assert not (run / "summary.json").exists(), "the run finished before it could be killed"
    done = torch.load(last, weights_only=False)["epoch"]  # the last epoch it finished
    r = call_cli("experiments.train", *args, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    s = last_json(r.stdout)
    assert f"resuming from {last}" in r.stderr and s["run_dir"] == str(run)
    # It continued from that checkpoint instead of training again from the start.
    assert f"Restored all states from the checkpoint at {last}" in r.stderr
    assert done < 5
    assert s["epochs"] == 6
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics.dropna(subset=["val/acc_clip"])["epoch"].max() == 5
    assert metrics["test/acc_clip"].notna().sum() == 1


def test_a_trial_that_repeats_a_running_config_waits_for_it_and_reuses_its_run(
        tmp_path, monkeypatch):
    """Late fusion ignores model.tap: tap 1 and tap 3 are one run directory. While one
    process trains it (holds its lock), another waits, then returns the finished summary."""
    from filelock import FileLock

    from experiments.config import compose
    from experiments.run_dirs import run_dir_for

    out = tmp_path / "out"
    monkeypatch.setenv("MLFI_OUTPUT_DIR", str(out))
    words = [*TINY, f"data.root={tmp_path / 'gtzan'}", "model=late_fusion", "train.resume=auto"]
    run_dir, _ = run_dir_for(compose([*words, "model.tap=1"]))
    assert run_dir_for(compose([*words, "model.tap=3"]))[0] == run_dir
    lock = FileLock(str(run_dir / ".run.lock"))
    run_dir.mkdir(parents=True)
    lock.acquire()
    p = subprocess.Popen([sys.executable, "-m", "experiments.train", *words, "model.tap=3"],
                         cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "MLFI_OUTPUT_DIR": str(out)})
    try:
        seen = []
        for line in p.stderr:  # blocks until the child reports that it waits
            seen.append(line)
            if "another process is training" in line:
                break
        assert any(str(run_dir) in ln for ln in seen), seen
        done = {"test/acc_clip": 0.625, "run_dir": str(run_dir)}
        (run_dir / "summary.json").write_text(json.dumps(done))
    finally:
        lock.release()
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr[-2000:]
    assert last_json(stdout) == done and "run already complete" in stderr


# ----------------------------------------------------------------- your own music
def _library(root):
    """A user's folder: nested audio, macOS litter, a hidden folder, non-audio files."""
    (root / "album one").mkdir(parents=True)
    (root / "album one" / "disc 2").mkdir()
    (root / ".cache").mkdir()
    sf.write(str(root / "album one" / "01 intro é.wav"), tone(3.2, sr=22050), 22050)
    x = tone(4.0, sr=44100, freq=330.0)
    sf.write(str(root / "album one" / "disc 2" / "02.flac"), np.stack([x, x], 1), 44100)
    sf.write(str(root / "single.ogg"), tone(3.5, sr=16000, freq=550.0), 16000,
             format="OGG", subtype="VORBIS")
    (root / "album one" / "._01 intro é.wav").write_bytes(b"\x00\x05\x16\x07 resource fork")
    sf.write(str(root / ".cache" / "hidden.wav"), tone(3.0), 22050)
    (root / "album one" / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    (root / "playlist.m3u").write_text("single.ogg\n")
    return root


def test_predict_takes_folders_globs_and_files_in_any_mix(trained, tmp_path):
    _, _, env, s, _ = trained
    lib = _library(tmp_path / "music")
    sf.write(str(tmp_path / "loose.wav"), tone(3.5), 22050)
    r = call_cli("experiments.predict", f"checkpoint={s['checkpoint']}",
                 f"files=[{lib / 'album one'},'{tmp_path}/*.wav','{lib}/**/*.ogg',"
                 f"{tmp_path}/missing.mp3,'{tmp_path}/*.xyz']", "workers=2", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    res = last_json(r.stdout)
    names = [p["file"].rsplit("/", 1)[1] for p in res["predictions"]]
    assert names == ["missing.mp3", "*.xyz", "01 intro é.wav", "02.flac", "loose.wav",
                     "single.ogg"]
    assert res["predictions"][0]["error"] == "no such file or folder"
    assert res["predictions"][1]["error"] == "pattern matched no audio file"
    assert res["predicted"] == 4 and res["errors"] == 2 and res["ignored_non_audio"] == 1
    assert "1 non-audio files ignored" in r.stderr  # cover.jpg; ._*, .cache/ are litter


def test_batched_predictions_equal_one_file_at_a_time(trained, tmp_path):
    from datamodules.inference import FileSegmenter
    from experiments.predict import predict_batches, predict_file
    from lightning_modules import load_model

    _, _, _, s, _ = trained
    lib = _library(tmp_path / "music")
    files = sorted(str(p) for p in lib.rglob("*") if p.suffix in (".wav", ".flac", ".ogg")
                   and "._" not in p.name and ".cache" not in str(p))
    model = load_model(s["checkpoint"])
    seg = FileSegmenter(model.hparams.extra)
    single = {f: predict_file(model, seg, f) for f in files}
    groups = list(predict_batches(model, files, workers=2, batch_size=4))
    assert len(groups) > 1  # several files per model batch, in more than one batch
    batched = {r["file"]: r for g in groups for r in g}
    assert set(batched) == set(files)
    for f in files:
        for g, p in single[f]["probabilities"].items():
            assert batched[f]["probabilities"][g] == pytest.approx(p, abs=2e-5)
        assert batched[f]["segments"] == single[f]["segments"]


def test_predict_streams_a_csv_that_survives_kill_9_and_resumes(trained, tmp_path):
    _, _, env, s, _ = trained
    lib = tmp_path / "many"
    lib.mkdir()
    for i in range(40):
        sf.write(str(lib / f"clip{i:02d}.wav"), tone(3.5, freq=200.0 + 20 * i), 22050)
    sf.write(str(lib / "broken.wav"), np.full(22050, np.nan, dtype=np.float32), 22050,
             subtype="FLOAT")
    out = tmp_path / "preds.csv"
    args = [f"checkpoint={s['checkpoint']}", f"files=[{lib}]", f"out={out}", "batch_size=2",
            "workers=1"]
    p = subprocess.Popen([sys.executable, "-m", "experiments.predict", *args], cwd=REPO,
                         env={**os.environ, **env}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.is_file() or
                                      len(out.read_text().splitlines()) < 4):
        time.sleep(0.1)
    p.kill()  # SIGKILL: no cleanup runs
    p.wait()
    first = pd.read_csv(out)
    assert 3 <= len(first) < 41, len(first)  # stopped part-way, whole rows only
    with open(out, "a") as fh:
        fh.write(f"{lib}/clip39.wav,rock,0.9")  # a row cut mid-write
    r = run_cli("experiments.predict", *args, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    res = last_json(r.stdout)
    assert res["skipped"] == len(first) and res["predicted"] + res["errors"] == 41 - len(first)
    table = pd.read_csv(out)
    assert len(table) == 41 and table["file"].is_unique  # every file once
    bad = table[table["file"].str.endswith("broken.wav")].iloc[0]
    assert isinstance(bad["error"], str) and pd.isna(bad["genre"])
    good = table[table["error"].isna()]
    assert (good["p"] >= good["p_2"]).all() and (good["segments"] >= 1).all()
    assert "file/s" in r.stderr or "files/s" in r.stderr or "it/s" in r.stderr
    again = last_json(run_cli("experiments.predict", *args, env=env).stdout)
    assert again["skipped"] == 41 and again["predicted"] == 0  # all done: nothing to redo


def test_evaluate_scores_a_users_labelled_folders(trained, tmp_path):
    _, _, env, s, _ = trained
    music = tmp_path / "music"
    (music / "jazz").mkdir(parents=True)
    (music / "Rock" / "live").mkdir(parents=True)
    (music / "misc").mkdir()
    sf.write(str(music / "jazz" / "a.wav"), tone(4.0, freq=220.0), 22050)
    sf.write(str(music / "Rock" / "live" / "b.flac"), tone(4.0, freq=440.0), 22050)
    sf.write(str(music / "misc" / "c.wav"), tone(4.0), 22050)
    out = tmp_path / "eval"
    r = call_cli("experiments.evaluate", f"checkpoint={s['checkpoint']}", f"files=[{music}]",
                 f"out={out}", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    e = last_json(r.stdout)
    assert e["clips"] == 2 and [k["file"].rsplit("/", 1)[1] for k in e["skipped"]] == ["c.wav"]
    pred = pd.read_csv(out / "predictions_files.csv")
    assert list(pred["genre"]) == ["rock", "jazz"]  # sorted paths: Rock/live/b, jazz/a
    assert e["files/acc_clip"] == pytest.approx(pred["correct"].mean())
    assert (out / "confusion_files.png").is_file() and len(e["per_class"]) == 10
    assert "no folder in its path is named like a genre" in r.stderr


def test_checkpoint_lists_and_globs_score_an_ensemble(trained, tmp_path):
    _, _, env, s, _ = trained
    ck = s["checkpoint"]
    twin = tmp_path / "twin" / "best.ckpt"
    twin.parent.mkdir()
    twin.write_bytes(open(ck, "rb").read())
    r = call_cli("experiments.evaluate", f"checkpoint=[{ck},{twin}]", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    e = last_json(r.stdout)
    # two copies of one model: the ensemble is that model
    assert e["test/acc_clip"] == pytest.approx(s["test/acc_clip"], abs=1e-6)
    assert len(e["checkpoints"]) == 2 and "ensemble of 2 checkpoints" in r.stderr
    sf.write(str(tmp_path / "a.wav"), tone(3.5), 22050)
    one = last_json(call_cli("experiments.predict", f"checkpoint={ck}",
                             f"files=[{tmp_path / 'a.wav'}]", env=env).stdout)
    both = last_json(call_cli("experiments.predict", f"checkpoint='{tmp_path}/*/best.ckpt'",
                              f"files=[{tmp_path / 'a.wav'}]", env=env).stdout)
    assert both["checkpoints"] == [str(twin.resolve())]  # the glob's one match
    for g, p in one["predictions"][0]["probabilities"].items():
        assert both["predictions"][0]["probabilities"][g] == pytest.approx(p, abs=2e-5)
    # a member trained on other features is refused, by name
    other = torch.load(ck, weights_only=False)
    other["hyper_parameters"]["extra"]["features"]["n_mels"] = 64
    torch.save(other, str(tmp_path / "other.ckpt"))
    bad = call_cli("experiments.predict", f"checkpoint=[{ck},{tmp_path / 'other.ckpt'}]",
                   f"files=[{tmp_path / 'a.wav'}]", env=env)
    assert bad.returncode == 2 and "other.ckpt has other feature parameters" in bad.stderr
    assert call_cli("experiments.predict", f"checkpoint='{tmp_path}/none*.ckpt'",
                    "files=[x.wav]", env=env).returncode == 2
