"""What every entry point shares: its own --help, logging on stderr (rank 0 only), the
trainer built from the config, atomic completion markers."""
from __future__ import annotations

import json
import logging
import sys

import pytest

from experiments.config import compose, configure_logging
from tests.conftest import call_cli

USAGE = {
    "experiments.train": "python -m experiments.train data=synth model=mid_two_way",
    "experiments.prepare": "python -m experiments.prepare data=gtzan data.root=DIR",
    "experiments.evaluate": "python -m experiments.evaluate checkpoint=PATH",
    "experiments.predict": "python -m experiments.predict checkpoint=PATH",
    "experiments.explain": "python -m experiments.explain checkpoint=",
    "experiments.sweep": "python -m experiments.sweep [sweep=quickstart]",
}


@pytest.mark.parametrize("module", sorted(USAGE))
def test_help_prints_this_commands_usage(module):
    r = call_cli(module, "--help")
    assert r.returncode == 0
    assert USAGE[module] in r.stdout
    assert "Config composition" not in r.stdout  # not config.py's docstring
    assert '"model": ["chroma_only", "late_fusion"' in r.stdout  # the groups to choose from


def test_library_logs_reach_stderr_on_rank_zero_only(monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    configure_logging()
    logging.getLogger("datamodules.cache").info("another process is building; waiting")
    assert "datamodules.cache: another process is building; waiting" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "1")
    configure_logging()
    logging.getLogger("datamodules.cache").info("resuming from clip 16")
    logging.getLogger("datamodules.cache").warning("lock is stale")
    err = capsys.readouterr().err
    assert "resuming" not in err and "datamodules.cache: lock is stale" in err
    monkeypatch.delenv("RANK")
    configure_logging()


def test_a_trainer_override_that_the_code_also_sets_is_taken(tmp_path, monkeypatch):
    from experiments.builders import build_trainer

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)

    cfg = compose(["trainer=cpu", "+trainer.enable_progress_bar=false",
                   "logger.wandb.enabled=false", "callbacks.gradcam.enabled=false",
                   "callbacks.ablation.enabled=false", "callbacks.interpretability.enabled=false"])
    trainer = build_trainer(cfg, tmp_path, "run-id")
    assert trainer.progress_bar_callback is None
    assert build_trainer(compose(["trainer=cpu", "logger.wandb.enabled=false"]), tmp_path,
                         "x").progress_bar_callback is not None
    # Into a log file (sweep trials, cluster jobs) no bar is redrawn by default.
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert build_trainer(compose(["trainer=cpu", "logger.wandb.enabled=false"]), tmp_path,
                         "y").progress_bar_callback is None


def test_the_evaluation_trainer_follows_cfg_trainer_on_one_device_and_scores_everything():
    from experiments.builders import build_eval_trainer

    cfg = compose(["trainer=cpu", "trainer.precision=bf16-mixed", "trainer.deterministic=true",
                   "trainer.limit_test_batches=0.1", "trainer.devices=2"])
    t = build_eval_trainer(cfg)
    assert t.precision == "bf16-mixed" and t.num_devices == 1
    assert t.limit_test_batches == 1.0 and t.logger is None and t.checkpoint_callback is None


def test_summary_json_is_replaced_atomically(tmp_path):
    from datamodules.publish import atomic_write_text

    path = tmp_path / "summary.json"
    path.write_text('{"old": tru')  # a half-written file from an earlier crash
    atomic_write_text(path, json.dumps({"test/acc_clip": 0.75}))  # what train.py uses
    assert json.loads(path.read_text()) == {"test/acc_clip": 0.75}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left
