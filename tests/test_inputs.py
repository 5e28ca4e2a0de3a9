"""Files, folders and glob patterns as a user names them (predict/explain ``files=``)."""
import os

from datamodules.inputs import expand_inputs
from experiments.predict import PredictionCSV
from experiments.report_html import write_report


def _touch(path, data=b"RIFF"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folders_recurse_follow_links_once_and_leave_litter_out(tmp_path):
    lib = tmp_path / "lib"
    a = _touch(lib / "a" / "01.wav")
    b = _touch(lib / "b" / "02.MP3")
    _touch(lib / "a" / "._01.wav")
    _touch(lib / ".trash" / "old.wav")
    _touch(lib / "a" / "cover.jpg")
    elsewhere = _touch(tmp_path / "elsewhere" / "03.flac").parent
    os.symlink(elsewhere, lib / "linked")
    os.symlink(lib, lib / "a" / "loop")  # a link back up the tree
    res = expand_inputs([str(lib), str(a)])
    assert [os.path.relpath(f, lib) for f in res.files] == [
        "a/01.wav", "b/02.MP3", "linked/03.flac"]
    assert res.ignored == 1 and not res.errors and str(b) in res.files


def test_patterns_and_missing_names_are_reported(tmp_path):
    _touch(tmp_path / "x" / "one.ogg")
    _touch(tmp_path / "x" / "y" / "two.ogg")
    _touch(tmp_path / "x" / "notes.txt")
    res = expand_inputs([f"{tmp_path}/x/**/*", f"{tmp_path}/none*.wav", f"{tmp_path}/gone.wav",
                         str(_touch(tmp_path / "empty" / "readme.txt").parent)])
    assert [os.path.basename(f) for f in res.files] == ["one.ogg", "two.ogg"]
    assert [e["error"] for e in res.errors] == [
        "pattern matched no audio file", "no such file or folder",
        res.errors[2]["error"]]
    assert res.errors[2]["error"].startswith("folder holds no audio files")


def test_a_csv_killed_while_writing_its_header_is_started_again(tmp_path):
    out = tmp_path / "preds.csv"
    out.write_text("file,gen")  # cut mid-header
    sheet = PredictionCSV(out, ["rock", "jazz"], top_k=2)
    assert out.read_text().splitlines() == [",".join(sheet.columns)] and not sheet.done
    good = {"file": "a.wav", "genre": "rock", "probabilities": {"rock": 0.7, "jazz": 0.3},
            "seconds": 3.0, "segments": 1}
    sheet.write([good, {"file": "b.wav", "error": "bad"}])
    again = PredictionCSV(out, ["rock", "jazz"], top_k=2)
    assert again.done == {"a.wav", "b.wav"}
    assert out.read_text().splitlines()[1] == "a.wav,rock,0.70000,jazz,0.30000,3.0,1,"


def test_report_links_images_whose_names_need_quoting(tmp_path):
    png = _touch(tmp_path / "Track #1?_mel.png", b"\x89PNG")
    page = write_report(tmp_path, [{"file": "/m/Track #1?.mp3", "genre": "rock",
                                    "probabilities": {"rock": 0.6, "jazz": 0.4},
                                    "seconds": 30.0, "segments": 19, "pngs": {"mel": str(png)},
                                    "top": {}}], "model.ckpt", ["gradcam"]).read_text()
    assert 'src="Track%20%231%3F_mel.png"' in page
