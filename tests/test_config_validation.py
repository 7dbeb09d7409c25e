"""Every setting is checked (type, choice, range) before anything is written or decoded: a bad value
is one line naming the key, the value and what is allowed, and leaves no run directory behind."""
from __future__ import annotations

import json
import math
import typing

import pytest
import yaml

import vistrain.training.run as run_mod
from vistrain.cli.main import build_parser, main
from vistrain.config import RANGES, TrainConfig, choices
from vistrain.errors import DataError, VistrainError
from tests.conftest import cli_error, make_image_folder

BAD = [  # (section, key, value, words the message must contain)
    ("train", "epochs", 0, ">= 1"), ("train", "epochs", -2, ">= 1"), ("train", "epochs", "abc", ">= 1"),
    ("train", "epochs", 2.5, ">= 1"), ("train", "epochs", True, ">= 1"),
    ("data", "batch_size", 0, ">= 1"), ("optim", "lr", -1, "> 0"), ("optim", "lr", math.nan, "> 0"),
    ("optim", "lr", math.inf, "> 0"), ("optim", "lr", 0, "> 0"), ("train", "seed", -1, "[0,"),
    ("data", "split_seed", 2 ** 32, "[0,"), ("optim", "weight_decay", -0.1, ">= 0"),
    ("data", "val_fraction", 1.0, "[0, 1)"), ("data", "test_fraction", -0.1, "[0, 1)"),
    ("data", "num_workers", -2, ">= -1"), ("train", "patience", 0, ">= 1"),
    ("model", "drop_rate", 1.0, "[0, 1)"), ("augment", "mixup", -1, ">= 0"),
    ("augment", "cutmix", -0.5, ">= 0"), ("data", "max_image_pixels", 0, ">= 1"),
    ("data", "on_bad_image", "maybe", "skip, fail"), ("data", "cache", "on", "auto, off"),
    ("data", "on_bad_image", "fial", "skip, fail"), ("data", "cache", "of", "auto, off"),
    ("data", "balance", "x", "auto, weights, sampler, none"),
    ("preprocess", "resize_mode", "squash", "crop"), ("preprocess", "interpolation", "cubic", "bicubic"),
    ("preprocess", "normalize", "z", "imagenet"), ("preprocess", "std", [0.2, 0, 0.2], "> 0"),
    ("preprocess", "std", [0.2, math.nan, 0.2], "> 0"), ("preprocess", "size", 0, ">= 1"),
    ("augment", "preset", "extreme", "heavy"), ("augment", "policy", "autoaugment", "randaugment"),
    ("augment", "jitter", "rgb", "matrix"), ("model", "norm", "batchy", "group"),
    ("model", "act", "swish", "silu"), ("model", "init", "zeros", "kaiming"),
    ("strategy", "name", "linear-probe", "finetune"), ("strategy", "feature_cache", "x", "clean"),
    ("strategy", "head", "mlp", "logreg"), ("strategy", "bn_policy", "off", "frozen"),
    ("optim", "name", "adam", "adamw"), ("schedule", "name", "linear", "cosine"),
    ("train", "monitor", "f1", "val_loss"), ("train", "cpu_amp", "fp16", "bf16"),
    ("train", "device", "gpu", "cuda:N"), ("train", "amp", "yes", "true or false"),
    ("model", "name", "", "model name"), ("strategy", "unfreeze_epochs", [1, 3], ">= 2"),
]


@pytest.mark.parametrize("section,key,value,allowed", BAD,
                         ids=[f"{s}.{k}={v!r}" for s, k, v, _ in BAD])
def test_invalid_setting_is_one_line_naming_key_value_and_choices(section, key, value, allowed):
    with pytest.raises(VistrainError) as err:
        TrainConfig.from_dict({section: {key: value}})
    msg = str(err.value)
    assert f"{section}.{key}" in msg and allowed in msg and "\n" not in msg, msg
    shown = [repr(v) for v in value] if isinstance(value, list) else []
    assert any(t[:4] in msg for t in (repr(value), str(value), *shown)), msg


def test_fractions_must_leave_training_images():
    with pytest.raises(VistrainError, match="val_fraction.*test_fraction.*< 1"):
        TrainConfig.from_dict({"data": {"val_fraction": 0.5, "test_fraction": 0.5}})
    TrainConfig.from_dict({"data": {"val_fraction": 0.0, "test_fraction": 0.0}})  # all train: fine


def test_explicit_normalize_needs_mean_and_std():
    with pytest.raises(VistrainError, match="preprocess.mean"):
        TrainConfig.from_dict({"preprocess": {"normalize": "explicit"}})


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = TrainConfig().check()
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml").check() == cfg
    assert TrainConfig.from_dict({"optim": {"lr": 1}}).optim.lr == 1.0  # int -> float


def test_yaml_off_is_not_a_boolean(tmp_path):
    """YAML 1.1 reads a bare `off` as false: `cache: off` must still mean "off", not "on"."""
    (tmp_path / "c.yaml").write_text("data:\n  cache: off\ntrain:\n  cpu_amp: off\n")
    cfg = TrainConfig.load(tmp_path / "c.yaml")
    assert (cfg.data.cache, cfg.train.cpu_amp) == ("off", "off")
    from vistrain.cli.common import config_from_args
    args = build_parser().parse_args(["train", "D", "--set", "data.cache=off",
                                      "--set", "model.name=vistrain/resnet-tiny"])
    assert config_from_args(args, "D").data.cache == "off"


def test_cli_choices_come_from_the_config_table():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    by_dest = {a.dest: a.choices for a in train._actions if a.choices}
    for dest, key in (("strategy", "strategy.name"), ("augment", "augment.preset"),
                      ("jitter", "augment.jitter"), ("normalize", "preprocess.normalize"),
                      ("norm", "model.norm"), ("act", "model.act"), ("init", "model.init"),
                      ("on_bad_image", "data.on_bad_image"), ("cpu_amp", "train.cpu_amp")):
        assert tuple(by_dest[dest]) == choices(key), dest
    assert set(RANGES) <= {f"{s}.{k}" for s, sec in TrainConfig().to_dict().items() for k in sec}


def test_scratch_models_default_to_finetune_in_the_config_itself():
    """The rule lives in TrainConfig.resolve, so the Python API gets it as well as the CLI."""
    cfg = TrainConfig.from_dict({"model": {"name": "vistrain/resnet20"}}).check()
    assert (cfg.strategy.name, cfg.model.pretrained) == ("finetune", False)
    cfg = TrainConfig.from_dict({"model": {"name": "vistrain/resnet20"},
                                 "strategy": {"name": "gradual"}}).check()
    assert cfg.strategy.name == "gradual"
    assert TrainConfig().check().strategy.name == "auto"
    cfg = TrainConfig()  # the API's order: defaults, then the user's settings, then check()
    cfg.model.name = "vistrain/resnet-tiny"
    assert cfg.check().strategy.name == "finetune"


def test_resolve_follows_a_model_changed_later_but_keeps_user_choices():
    """`compare --vary model=...` and API arguments change the model of an already resolved config."""
    import copy
    base = TrainConfig.from_dict({"model": {"name": "vistrain/resnet-tiny"}}).check()
    to_timm = copy.deepcopy(base)
    to_timm.model.name = "resnet18"
    assert (to_timm.check().strategy.name, to_timm.model.pretrained) == ("auto", True)
    to_scratch = TrainConfig().check()
    to_scratch.model.name = "vistrain/resnet20"
    assert (to_scratch.check().strategy.name, to_scratch.model.pretrained) == ("finetune", False)
    chosen = copy.deepcopy(base)
    chosen.strategy.name, chosen.model.name = "gradual", "resnet18"
    assert chosen.check().strategy.name == "gradual"
    own = TrainConfig.from_dict({"model": {"name": "resnet18", "pretrained": False}}).check()
    own.model.name = "vistrain/resnet20"
    own.check()
    own.model.name = "resnet18"
    assert own.check().model.pretrained is False       # the user's False stays


@pytest.mark.slow
@pytest.mark.parametrize("monitor,best", [("val_loss", 0.3), ("loss", 0.3), ("accuracy", 0.9),
                                          ("val_accuracy", 0.9)])
def test_monitor_val_loss_picks_the_lowest_validation_loss(tmp_path, monkeypatch, monitor, best):
    """`train.monitor=val_loss` used to fall back to accuracy silently."""
    import vistrain.training.strategy as strategy
    from vistrain.training.checkpoint import load_checkpoint
    scripted = iter([{"loss": 0.5, "accuracy": 0.9}, {"loss": 0.3, "accuracy": 0.5},
                     {"loss": 0.4, "accuracy": 0.6}])
    monkeypatch.setattr(strategy, "evaluate", lambda *a, **k: next(scripted))
    data = make_image_folder(tmp_path / "data", per_class=4, size=(12, 12))
    cfg = TrainConfig.from_dict({
        "data": {"root": str(data), "cache": "off", "num_workers": 0, "doctor": False, "batch_size": 4},
        "preprocess": {"size": 8}, "model": {"name": "vistrain/resnet-tiny"},
        "train": {"epochs": 3, "monitor": monitor, "patience": None, "device": "cpu",
                  "keep_checkpoints": True}})
    import vistrain.evaluation.figures as figures
    import vistrain.report.build as report_build
    monkeypatch.setattr(report_build, "build_report", lambda *a, **k: None)   # not needed here
    monkeypatch.setattr(figures, "write_run_figures", lambda *a, **k: None)
    run_mod.run_training(cfg, tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["best"] == best
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())  # resolved by run_training
    assert (saved["strategy"]["name"], saved["model"]["pretrained"]) == ("finetune", False)
    assert saved["data"]["root"] == str(data.resolve())


def test_max_image_pixels_is_applied_before_training(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("vistrain.training.prepare.set_max_image_pixels", seen.append)  # begin_run's
    cfg = TrainConfig.from_dict({"data": {"root": str(tmp_path / "missing"), "max_image_pixels": 1234}})
    with pytest.raises(DataError):
        run_mod.run_training(cfg, tmp_path / "out", progress=False)
    assert seen == [1234]
    args = build_parser().parse_args(["train", "D", "--max-image-pixels", "99"])
    from vistrain.cli.common import config_from_args
    assert config_from_args(args, "D").data.max_image_pixels == 99


# -- the command line: one line, exit 2, nothing written -----------------------------------------
@pytest.mark.parametrize("flags,needle", [
    (["--epochs", "0"], "train.epochs=0"), (["--epochs", "-2"], "train.epochs=-2"),
    (["--epochs", "-3"], "train.epochs=-3"), (["--batch-size", "0"], "data.batch_size=0"),
    (["--lr", "-1"], "optim.lr=-1"), (["--lr", "nan"], "optim.lr=nan"),
    (["--seed", "-1"], "train.seed=-1"), (["--set", "train.epochs=abc"], "train.epochs='abc'"),
    (["--set", "train.monitor=val_f1"], "train.monitor='val_f1'"),
    (["--set", "data.cache=maybe"], "data.cache='maybe'"),
    (["--max-image-pixels", "0"], "data.max_image_pixels=0"),
    (["--set", "nosuch.key=1"], "SECTION.KEY"), (["--set", "train.nokey=1"], "train.nokey"),
])
def test_bad_flag_is_one_line_and_leaves_no_run_dir(tmp_path, capsys, monkeypatch, flags, needle):
    data = make_image_folder(tmp_path / "data", per_class=2)
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, ["train", str(data), "--out", "out", *flags])
    assert needle in line, line
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_missing_data_folder_leaves_no_run_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = cli_error(capsys, ["train", str(tmp_path / "nope"), "--out", "out"])
    assert "nope" in line and not (tmp_path / "out").exists()
    line = cli_error(capsys, ["train", str(tmp_path / "nope")])  # default out: runs/<name>-<time>
    assert not (tmp_path / "runs").exists()


def test_unknown_model_leaves_no_run_dir(tmp_path, capsys, monkeypatch):
    data = make_image_folder(tmp_path / "data", per_class=2)
    monkeypatch.chdir(tmp_path)
    cli_error(capsys, ["train", str(data), "--out", "out", "--model", "vistrain/no-such-net"])
    assert not (tmp_path / "out").exists()


def test_out_naming_a_file_is_an_error(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", per_class=2)
    (tmp_path / "file.txt").write_text("keep me")
    line = cli_error(capsys, ["train", str(data), "--out", str(tmp_path / "file.txt")])
    assert "is a file" in line and (tmp_path / "file.txt").read_text() == "keep me"


def test_print_config_prints_resolved_yaml_and_writes_nothing(tmp_path, capsys, monkeypatch):
    data = make_image_folder(tmp_path / "data", per_class=2)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    assert main(["train", "data", "--model", "vistrain/resnet-tiny", "--epochs", "4",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["epochs"] == 4 and printed["strategy"]["name"] == "finetune"
    assert printed["data"]["root"] == str(data.resolve())           # absolute, as saved
    assert TrainConfig.from_dict(printed).check().to_dict() == printed  # loadable as --config
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    cli_error(capsys, ["train", "data", "--epochs", "0", "--print-config"])


# -- the JSON Schema: the same rules as validation --------------------------------------------
def _schema_validator():
    jsonschema = pytest.importorskip("jsonschema")
    from vistrain.config import json_schema
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_schema_accepts_every_default_and_a_saved_config(tmp_path):
    check = _schema_validator()
    assert list(check.iter_errors(TrainConfig().to_dict())) == []
    assert list(check.iter_errors({"train": {"epochs": 3}, "model": {"name": "resnet18"}})) == []
    assert list(check.iter_errors({"train": {"epochs": 3, "nope": 1}})) != []     # unknown key
    assert list(check.iter_errors({"nope": {}})) != []                             # unknown section


def _edges(rule):
    """Values on both sides of each end of a range rule (of numbers)."""
    from vistrain.config.rules import Range
    if not isinstance(rule, Range):
        return []
    out = []
    for end in (rule.low, rule.high):
        if end is not None:
            out += [end - 1, end - 0.5, end, end + 0.5, end + 1]
    return out or [0, -1, 1]


@pytest.mark.parametrize("key", sorted(RANGES))
def test_the_schema_and_validation_agree_at_every_range_edge(key):
    """For each ranged setting, values at and around its ends: the schema accepts exactly what
    TrainConfig.from_dict accepts (whole-number settings take whole values only)."""
    check = _schema_validator()
    section, name = key.split(".")
    hint = typing.get_type_hints(type(getattr(TrainConfig(), section)))[name]
    whole = int in typing.get_args(hint) or hint is int
    from vistrain.config.rules import Items, Pattern
    rule = RANGES[key]
    values = [v for v in _edges(rule) if not whole or float(v).is_integer()]
    values = [int(v) if whole else float(v) for v in values]
    if isinstance(rule, Items):
        values = [[], [1.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-1.0], [300.0, 0.0, 0.0], [2.0, 4.0]]
        if hint_is_int_list(hint):
            values = [[int(x) for x in v] for v in values]
    if isinstance(rule, Pattern):
        values = ["", " ", "auto", "cpu", "cuda", "cuda:1", "gpu", "resnet18", "vistrain/resnet20"]
    assert values, key
    for v in values:
        by_schema = not list(check.iter_errors({section: {name: v}}))
        try:
            TrainConfig.from_dict({section: {name: v}})
            by_validation = True
        except VistrainError:
            by_validation = False
        assert by_schema == by_validation, (key, v, by_schema, by_validation)


def hint_is_int_list(hint) -> bool:
    """``list[int]`` or ``list[int] | None``."""
    base = [hint] if typing.get_origin(hint) is list else [a for a in typing.get_args(hint) if a is not type(None)]
    return any(typing.get_args(b) == (int,) for b in base)


def test_print_schema_prints_it_without_data(capsys):
    assert main(["train", "--print-schema"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["properties"]["optim"]["properties"]["lr"]["anyOf"][0]["exclusiveMinimum"] == 0
