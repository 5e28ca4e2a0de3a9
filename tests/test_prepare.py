import shutil

from tests.conftest import call_cli, last_json, make_gtzan, run_cli, write_clip


def test_prepare_reports_bad_files_and_exits_zero(tmp_path):
    top = make_gtzan(tmp_path / "g", per_genre=2)
    (top / "blues" / "blues.00090.wav").write_bytes(b"")
    t = write_clip(top / "rock" / "rock.00090.wav", seconds=4.0)
    t.write_bytes(t.read_bytes()[:3000])
    (top / "pop" / "x.wav").write_text("hello")
    shutil.copy(top / "blues" / "blues.00000.wav", top / "blues" / "._blues.00000.wav")
    r = call_cli("experiments.prepare", "data=gtzan", f"data.root={tmp_path / 'g'}",
                 "data.split=random", "index_only=true")
    assert r.returncode == 0, r.stderr
    s = last_json(r.stdout)
    assert s["dataset"] == "gtzan" and s["clips"] == 20
    names = {x["path"].rsplit("/", 1)[1]: x["reason"] for x in s["skipped"]}
    assert set(names) == {"blues.00090.wav", "rock.00090.wav", "x.wav", "._blues.00000.wav"}
    assert "blues.00090.wav" in r.stderr  # also told to the person


def test_prepare_missing_dataset_is_one_clear_line(tmp_path):
    r = call_cli("experiments.prepare", "data=gtzan", f"data.root={tmp_path / 'nope'}")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "GTZAN not found" in lines[0] and "data.root" in lines[0]
    assert r.stdout == ""


def test_prepare_bad_override_is_a_config_error():
    r = run_cli("experiments.prepare", "data.rooot=/x")
    assert r.returncode == 2 and "Valid keys there" in r.stderr
