"""One table of settings (``vistrain.config.settings.SETTINGS``) behind the flags and the keywords.

``vistrain train DATA [flags] --print-config`` and ``vistrain.make_config(DATA, **keywords)``
must give the same config, byte for byte, for every combination below; every entry of the
table is used at least once (checked).  A bad choice is refused by both before anything is
decoded or created.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import vistrain
from conftest import cli_error, make_image_folder
from vistrain.cli.main import build_parser, main
from vistrain.config.settings import SETTINGS
from vistrain.errors import VistrainError

CONFIG_FILE = "config_file"   # replaced by the path of a YAML config written in the test

# (id, command-line flags, the API's keywords)
CASES = [
    ("defaults", [], {}),
    ("scratch-resnet20", ["--model", "vistrain/resnet20"], {"model": "vistrain/resnet20"}),
    ("timm-epochs-lr", ["--model", "resnet18", "--epochs", "7", "--lr", "0.003"],
     {"model": "resnet18", "epochs": 7, "lr": 0.003}),
    ("strategy-kept", ["--model", "vistrain/resnet-tiny", "--strategy", "gradual"],
     {"model": "vistrain/resnet-tiny", "strategy": "gradual"}),
    ("strategy-auto-scratch", ["--strategy", "auto", "--model", "vistrain/resnet20"],
     {"strategy": "auto", "model": "vistrain/resnet20"}),
    ("timm-finetune", ["--model", "tf_efficientnet_lite0", "--strategy", "finetune", "--epochs", "1"],
     {"model": "tf_efficientnet_lite0", "strategy": "finetune", "epochs": 1}),
    ("batch-seed", ["--batch-size", "8", "--seed", "5"], {"batch_size": 8, "seed": 5}),
    ("augment-mix", ["--augment", "heavy", "--mixup", "0.2", "--cutmix", "1"],
     {"augment": "heavy", "mixup": 0.2, "cutmix": 1}),          # a whole number for a float
    ("jitter-normalize", ["--jitter", "hsv", "--normalize", "imagenet"],
     {"jitter": "hsv", "normalize": "imagenet"}),
    ("no-pretrained", ["--no-pretrained"], {"pretrained": False}),
    ("weights", ["--model", "resnet18", "--weights", "w.safetensors"],
     {"model": "resnet18", "weights": "w.safetensors"}),
    ("scratch-layers", ["--model", "vistrain/resnet20", "--norm", "group", "--act", "gelu",
                        "--init", "xavier"],
     {"model": "vistrain/resnet20", "norm": "group", "act": "gelu", "init": "xavier"}),
    ("bad-images", ["--on-bad-image", "fail", "--max-image-pixels", "1000"],
     {"on_bad_image": "fail", "max_image_pixels": 1000}),
    ("cache-stream", ["--cache", "stream"], {"cache": "stream"}),
    ("device", ["--device", "cpu", "--cpu-amp", "bf16", "--host-memory", "reuse"],
     {"device": "cpu", "cpu_amp": "bf16", "host_memory": "reuse"}),
    ("tracking-checkpoints", ["--track", "mlflow", "--track", "tensorboard", "--keep-checkpoints"],
     {"track": ["mlflow", "tensorboard"], "keep_checkpoints": True}),
    ("set-optim-bool", ["--set", "optim.name=sgd", "--set", "optim.momentum=0.8",
                        "--set", "train.amp=false"],
     {"optim": {"name": "sgd", "momentum": 0.8}, "train": {"amp": False}}),
    ("set-yaml-off", ["--set", "data.cache=off", "--set", "preprocess.size=64"],
     {"data": {"cache": "off"}, "preprocess": {"size": 64}}),
    ("set-through-the-table", ["--set", "train.budget=none", "--set", "logging.track=mlflow"],
     {"budget": "none", "track": "mlflow"}),
    ("set-after-flag", ["--epochs", "3", "--set", "train.epochs=5"],
     {"epochs": 3, "train": {"epochs": 5}}),
    ("model-section", ["--set", "model.name=vistrain/resnet20", "--set", "model.pretrained=true"],
     {"model": {"name": "vistrain/resnet20", "pretrained": True}}),
    ("augment-section", ["--augment", "none", "--set", "augment.hflip=true",
                         "--set", "augment.rotation=10"],
     {"augment": {"preset": "none", "hflip": True, "rotation": 10}}),
    ("strategy-section", ["--lr", "1e-3", "--set", "schedule.name=onecycle",
                          "--set", "strategy.unfreeze_epochs=[2,4]"],
     {"lr": 1e-3, "schedule": {"name": "onecycle"}, "strategy": {"unfreeze_epochs": [2, 4]}}),
    ("explicit-normalize", ["--normalize", "explicit", "--set", "preprocess.mean=[0.5,0.5,0.5]",
                            "--set", "preprocess.std=[0.25,0.25,0.25]"],
     {"normalize": "explicit", "preprocess": {"mean": [0.5] * 3, "std": [0.25] * 3}}),
    ("config-file", ["--config", CONFIG_FILE], {"config": CONFIG_FILE}),
    ("config-file-overridden", ["--config", CONFIG_FILE, "--epochs", "9", "--model", "resnet18"],
     {"config": CONFIG_FILE, "epochs": 9, "model": "resnet18"}),  # the new model's defaults
    ("config-file-set", ["--config", CONFIG_FILE, "--set", "optim.weight_decay=0"],
     {"config": CONFIG_FILE, "optim": {"weight_decay": 0}}),
    ("group-regex", ["--group-regex", r"(\w)_", "--set", "data.test_fraction=0.2"],
     {"group_regex": r"(\w)_", "data": {"test_fraction": 0.2}}),
    ("groups-file", ["--groups", CONFIG_FILE], {"groups": CONFIG_FILE}),  # any existing file
    ("no-calibration", ["--calibration", "none", "--epochs", "2"], {"calibration": "none", "epochs": 2}),
    ("budget-minutes", ["--budget", "4.5"], {"budget": 4.5}),
    ("no-budget", ["--budget", "none", "--strategy", "auto"], {"budget": "none", "strategy": "auto"}),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny image folder and a config file (a from-scratch model, 3 epochs, sgd)."""
    tmp = tmp_path_factory.mktemp("settings-table")
    data = make_image_folder(tmp / "data", per_class=2, size=(12, 12))
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": "vistrain/resnet-tiny"},
                                      "train": {"epochs": 3}, "optim": {"name": "sgd"}}))
    return data, config


def with_config(values, config: Path):
    if isinstance(values, dict):
        return {k: str(config) if v == CONFIG_FILE else v for k, v in values.items()}
    return [str(config) if v == CONFIG_FILE else v for v in values]


def printed(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "error" not in captured.err, captured.err
    return captured.out


@pytest.mark.parametrize("flags,keywords", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cli_and_api_resolve_the_same_config(folder, capsys, flags, keywords):
    data, config = folder
    cli = printed(capsys, ["train", str(data), *with_config(flags, config), "--print-config"])
    api = vistrain.make_config(data, **with_config(keywords, config)).to_yaml()
    assert cli == api


def test_every_setting_is_covered_by_the_cases():
    options = {a for _, flags, _ in CASES for a in flags if a.startswith("--")}
    keywords = {k for _, _, kw in CASES for k, v in kw.items() if not isinstance(v, dict)}
    assert {s.option for s in SETTINGS} <= options
    assert {s.name for s in SETTINGS} <= keywords
    assert {"--set", "--config"} <= options and len(CASES) >= 20


def test_scratch_and_pretrained_models_get_their_defaults(folder, capsys):
    data, _ = folder
    for model, strategy, pretrained in (("vistrain/resnet20", "finetune", False),
                                        ("resnet18", "auto", True)):
        cfg = yaml.safe_load(printed(capsys, ["train", str(data), "--model", model, "--print-config"]))
        assert (cfg["strategy"]["name"], cfg["model"]["pretrained"]) == (strategy, pretrained)
        api = vistrain.make_config(data, model=model)
        assert (api.strategy.name, api.model.pretrained) == (strategy, pretrained)


def test_a_relative_folder_is_stored_absolute_by_both(folder, capsys, monkeypatch):
    data, _ = folder
    monkeypatch.chdir(data.parent)
    cli = printed(capsys, ["train", "data", "--epochs", "2", "--print-config"])
    assert cli == vistrain.make_config("data", epochs=2).to_yaml()
    assert yaml.safe_load(cli)["data"]["root"] == str(data.resolve())


@pytest.mark.parametrize("flags,keywords", [CASES[2][1:], CASES[11][1:], CASES[-1][1:]],
                         ids=[CASES[2][0], CASES[11][0], CASES[-1][0]])
def test_the_installed_command_prints_the_same(folder, flags, keywords):
    """Through a real process (``--strict`` changes the cache keys, not the config)."""
    data, config = folder
    res = subprocess.run([sys.executable, "-m", "vistrain.cli.main", "train", str(data),
                          *with_config(flags, config), "--strict", "--print-config"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout == vistrain.make_config(data, **with_config(keywords, config)).to_yaml()


def test_every_verb_with_training_settings_takes_the_whole_table():
    verbs = {name: p for name, p in next(a for a in build_parser()._actions
                                         if isinstance(a, argparse._SubParsersAction)).choices.items()}
    for verb in ("train", "cv", "compare", "check", "lr-find"):
        actions = {a.option_strings[0]: a for a in verbs[verb]._actions if a.option_strings}
        for s in SETTINGS:
            action = actions[s.option]
            assert action.dest == s.name and tuple(action.choices or ()) == s.choices, (verb, s.name)
            assert action.default is None, (verb, s.name)   # not given: the config file's value stays
        assert {"--config", "--set", "--strict"} <= set(actions), verb


def test_an_unknown_keyword_names_it_and_the_valid_ones(folder):
    data, _ = folder
    with pytest.raises(VistrainError) as err:
        vistrain.make_config(data, batchsize=8)
    msg = str(err.value)
    assert "'batchsize'" in msg and "\n" not in msg
    assert all(s.name in msg for s in SETTINGS) and "optim" in msg
    with pytest.raises(VistrainError, match="whole section"):
        vistrain.make_config(data, optim="sgd")


CHOICE_SETTINGS = [s for s in SETTINGS if s.choices]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """An empty working directory and an unused cache folder: a refused setting creates neither
    a run folder nor a cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("VISTRAIN_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    return cache


EXTRA = {"train": [], "cv": ["--folds", "2"], "compare": ["--vary", "norm=batch,group"]}
EXTRA_API = {"train": {}, "cv": {"folds": 2}, "compare": {"vary": ["norm=batch,group"]}}


def nothing_written(tmp_path: Path, cache: Path) -> None:
    assert not cache.exists() and not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("verb", ["train", "cv", "compare"])
@pytest.mark.parametrize("entry", CHOICE_SETTINGS, ids=[s.name for s in CHOICE_SETTINGS])
def test_a_bad_choice_flag_is_refused_before_anything_is_written(folder, fresh_cache, tmp_path,
                                                                  capsys, verb, entry):
    data, _ = folder
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([verb, str(data), *EXTRA[verb], "--out", "out", entry.option, "no-such-value"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert f"argument {entry.option}: invalid choice: 'no-such-value'" in err, err
    line = cli_error(capsys, [verb, str(data), *EXTRA[verb], "--out", "out",
                              "--set", f"{entry.key}=no-such-value"])
    assert entry.key in line and "'no-such-value'" in line and all(c in line for c in entry.choices)
    nothing_written(tmp_path, fresh_cache)


@pytest.mark.parametrize("job", ["train", "cv", "compare"])
@pytest.mark.parametrize("entry", CHOICE_SETTINGS, ids=[s.name for s in CHOICE_SETTINGS])
def test_a_bad_choice_keyword_is_refused_before_anything_is_written(folder, fresh_cache, tmp_path,
                                                                     job, entry):
    data, _ = folder
    with pytest.raises(VistrainError) as err:
        getattr(vistrain, job)(data, out="out", **EXTRA_API[job], **{entry.name: "no-such-value"})
    msg = str(err.value)
    assert entry.key in msg and "'no-such-value'" in msg and "\n" not in msg, msg
    assert all(c in msg for c in entry.choices), msg
    nothing_written(tmp_path, fresh_cache)


def test_every_entry_point_sets_a_value_through_the_table():
    """``--set SECTION.KEY``, compare's ``--vary`` and the API keywords reach a setting of the
    table through its entry (its rules apply), and a key of no setting through its
    section, with one error for an unknown key."""
    from vistrain.config import TrainConfig
    from vistrain.config.settings import set_text, set_value
    from vistrain.evaluation.compare import apply_setting
    by_key = set_text(TrainConfig(), "train.budget", "none").check()
    by_name = set_value(TrainConfig(), "budget", "none").check()
    varied = apply_setting(TrainConfig(), {"train.budget": "none"})
    assert by_key.train.budget is by_name.train.budget is varied.train.budget is None
    assert set_text(TrainConfig(), "optim.name", "sgd").optim.name == "sgd"
    assert set_text(TrainConfig(), "data.cache", "off").data.cache == "off"  # text, not YAML's false
    for bad in ("nosection.lr", "optim", "optim.nope"):
        with pytest.raises(VistrainError) as err:
            set_text(TrainConfig(), bad, "1")
        assert "\n" not in str(err.value) and bad.split(".")[-1] in str(err.value)
