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
    assert "Did you mean `data.root`?" in msg


def test_unknown_group_option_lists_choices():
    with pytest.raises(ConfigError, match="unknown model 'nope': Choose one of .*mid_two_way"):
        compose(["model=nope"])
    with pytest.raises(ConfigError, match="unknown model 'mid_twoway': Did you mean "
                                          "`mid_two_way`"):
        compose(["model=mid_twoway"])


@pytest.mark.parametrize("word, hint", [
    ("trainr.max_epochs=3", "Did you mean `trainer`?"),
    ("trainer.max_epoch=3", "Did you mean `trainer.max_epochs`?"),
    ("callbacks.ablation.max_segment=3", "Did you mean `callbacks.ablation.max_segments`?"),
])
def test_a_mistyped_key_suggests_the_closest_valid_one(word, hint):
    with pytest.raises(ConfigError) as e:
        compose([word])
    assert hint in str(e.value)


def test_a_word_far_from_every_key_gets_no_suggestion():
    with pytest.raises(ConfigError) as e:
        compose(["data.zzzzzz=1"])
    assert "Did you mean" not in str(e.value)


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


def _signature_defaults(fn) -> dict:
    import inspect

    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _same(a, b) -> bool:
    from collections.abc import Mapping

    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def test_code_defaults_agree_with_the_yaml():
    """configs/default.yaml is the one source of defaults: where a class or function also
    has a default for the same setting (for programmatic use), it is the same value."""
    from omegaconf import OmegaConf

    from datamodules.cache_key import AUDIO_DEFAULTS
    from datamodules.features import FeatureParams
    from experiments.builders import locate
    from lightning_modules.backbones import BACKBONES
    from lightning_modules.base import GenreClassifier

    cfg = OmegaConf.to_container(compose(["data=gtzan"]), resolve=True)  # no _global_ part
    checks = [(k, v, _signature_defaults(GenreClassifier.__init__)[k])
              for k, v in cfg["model"].items() if k != "mode"]
    checks.append(("backbone", cfg["choices"]["backbone"],
                   _signature_defaults(GenreClassifier.__init__)["backbone"]))
    for k, v in cfg["features"].items():
        checks.append((f"features.{k}", v, getattr(FeatureParams(), k)))
    checks += [(f"data.{k}", cfg["data"][k], v) for k, v in AUDIO_DEFAULTS.items()]
    # width/match_params are read by experiments.builders.backbone_kwargs, not the builders
    checks += [("backbone.width", cfg["backbone"]["width"], 1.0),
               ("backbone.match_params", cfg["backbone"]["match_params"], None)]
    for name in ("serial_cnn", "parallel_cnn"):
        for k, v in cfg["backbone"].items():
            if k not in ("name", "width", "match_params"):
                checks.append((f"{name}.{k}", v, _signature_defaults(BACKBONES[name])[k]))
    for section in ("callbacks", "logger"):
        for name, entry in cfg[section].items():
            defaults = _signature_defaults(locate(entry["_target_"]).__init__)
            if entry["_target_"].startswith("lightning_modules."):
                checks += [(f"{section}.{name}.{k}", v, defaults[k]) for k, v in entry.items()
                           if k not in ("enabled", "_target_", "run_dir", "out_dir")]
    wrong = [f"{k}: yaml {v!r}, code {d!r}" for k, v, d in checks if not _same(v, d)]
    assert not wrong, "\n".join(wrong)
    assert len(checks) >= 44
