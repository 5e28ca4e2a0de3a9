"""Speed settings resolved for the machine, the benchmarks that measure them, and the GPU
check's answer on a machine without CUDA."""
import json

import pytest
import torch

from datamodules.errors import UserError
from experiments import speed
from experiments.builders import build_eval_trainer
from experiments.config import compose
from tests.conftest import REPO, run_cli


@pytest.mark.parametrize("native,cpu,gpu", [(True, "bf16-mixed", "bf16-mixed"),
                                            (False, "32-true", "16-mixed")])
def test_auto_precision_is_bf16_only_where_it_is_native(monkeypatch, native, cpu, gpu):
    monkeypatch.setattr(speed, "native_bf16", lambda device_type: native)
    assert speed.resolve_precision("auto", "cpu") == cpu
    assert speed.resolve_precision("auto", "gpu") == gpu
    assert speed.resolve_precision("32-true", "cpu") == "32-true"  # an explicit choice stays


def test_channels_last_follows_precision_and_device():
    assert speed.resolve_channels_last("auto", "bf16-mixed", "cpu") is True
    assert speed.resolve_channels_last("auto", "32-true", "cpu") is False
    assert speed.resolve_channels_last("auto", "32-true", "gpu") is True
    assert speed.resolve_channels_last(True, "32-true", "cpu") is True
    with pytest.raises(UserError, match="train.channels_last='yes'"):
        speed.resolve_channels_last("yes", "32-true", "cpu")


def test_the_cpu_trainer_runs_what_this_machine_computes_fastest():
    t = build_eval_trainer(compose(["trainer=cpu"]))
    want = "bf16-mixed" if speed.native_bf16("cpu") else "32-true"
    assert t.precision == want


def test_training_benchmark_reports_every_setting_against_fp32_and_sgemm(capsys):
    from benchmarks import training

    assert training.main(["--modes", "late_fusion", "chroma_only", "--steps", "1",
                          "--rounds", "1", "--grid", "32x40", "--batch-size", "4",
                          "--processes", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    assert res["sgemm_gflops"] > 0 and res["auto_setting"] in ("fp32", "bf16+channels_last")
    first = res["modes"]["late_fusion"]
    for name in ("fp32", "bf16", "fp32+channels_last", "bf16+channels_last"):
        assert first[name] > 0 and first[f"{name}_ratio"] > 0
    assert first["fp32_ratio"] == 1.0 and first["gflop_per_segment"] > 0
    assert first["fp32_2_processes"] > 0
    # bf16 is timed for every mode where it is native, for the first mode only elsewhere.
    assert ("bf16" in res["modes"]["chroma_only"]) == res["native_bf16"]
    assert "GFLOP/s" in "\n".join(out[:-1]) and "*" in "\n".join(out[:-1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_check_says_no_cuda_device_and_exits_2(tmp_path):
    p = run_cli("benchmarks.gpu_check", "--out", str(tmp_path / "g.json"), timeout=120)
    assert p.returncode == 2, p.stderr
    assert "no CUDA device" in p.stderr and "Nothing was measured" in p.stderr
    assert not (tmp_path / "g.json").exists()
    assert (REPO / "benchmarks" / "gpu_check.sh").stat().st_mode & 0o111


@pytest.mark.slow
def test_gpu_check_steps_run_end_to_end_on_the_cpu(tmp_path):
    p = run_cli("benchmarks.gpu_check", "--cpu", "--seconds", "1", "--modes", "late_fusion",
                "--out", str(tmp_path / "g.json"), timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((tmp_path / "g.json").read_text())
    fig = res["training"]["modes"]["late_fusion"]
    assert fig["store"]["segments_per_s"] > 0 and fig["loader"]["segments_per_s"] > 0
    assert res["ddp_2_gpus"].startswith("skipped") and "clips_per_s" in json.dumps(res["features"])
