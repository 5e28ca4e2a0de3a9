import pytest

from experiments.config import ConfigError, compose, groups


def test_defaults_and_group_selection():
    cfg = compose([])
    assert cfg.data.name == "synth" and cfg.choices.data == "synth"
    cfg = compose(["data=gtzan", "model=mid_two_way"])
    assert cfg.data.name == "gtzan" and cfg.data.split == "fault_filtered"
    assert cfg.model.mode == "mid_two_way"
    assert "synth" not in cfg.data  # a group file's own keys leave with it


def test_dot_overrides_both_spellings_and_interpolation(tmp_path):
    cfg = compose(["data=gtzan", f"--paths.data_dir={tmp_path}", "seed=3",
                   "data.ratios=[0.5,0.25,0.25]"])
    assert cfg.data.root == f"{tmp_path}/gtzan"  # interpolation follows the override
    assert cfg.seed == 3 and list(cfg.data.ratios) == [0.5, 0.25, 0.25]
    cfg = compose(["data=gtzan", "data.root=/x"])
    assert cfg.data.root == "/x"


def test_paths_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFI_CACHE_DIR", str(tmp_path / "c"))
    assert compose([]).paths.cache_dir == str(tmp_path / "c")


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        compose(["data.rot=/x"])
    msg = str(e.value)
    assert "'data.rot'" in msg and "root" in msg and "split" in msg


def test_unknown_group_option_lists_choices():
    with pytest.raises(ConfigError, match="unknown model 'nope': choose one of .*mid_two_way"):
        compose(["model=nope"])


def test_plus_adds_a_key_and_bad_words_are_errors():
    assert compose(["+trainer.limit_train_batches=2"]).trainer.limit_train_batches == 2
    with pytest.raises(ConfigError, match="expected key=value"):
        compose(["gtzan"])


def test_every_group_file_composes():
    for group, names in groups().items():
        for name in names:
            cfg = compose([f"{group}={name}"])
            assert cfg.choices[group] == name


def test_group_file_global_section_reaches_other_sections():
    cfg = compose(["data=synth"])
    assert cfg.features.n_mels == 64 and cfg.features.hop_length == 1024
    assert "_global_" not in cfg.data
    assert compose(["data=gtzan"]).features.n_mels == 128
    # Command-line overrides still win over a group's _global_ values.
    assert compose(["data=synth", "features.n_mels=96"]).features.n_mels == 96
