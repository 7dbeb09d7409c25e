"""`vistrain compare` (one run per setting, same split) and from-scratch models end to end."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch
import yaml

from conftest import make_image_folder
from vistrain.errors import VistrainError
from vistrain.evaluation.compare import apply_setting, parse_vary, setting_name, settings_product
from vistrain.report.compare_report import render_compare_report
from test_run_record import round_trip_failures


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """One tiny compare run shared by the tests below (2 settings x 1 epoch)."""
    from vistrain.cli.main import main
    root = tmp_path_factory.mktemp("cmp")
    data = make_image_folder(root / "data", classes=("a", "b"), per_class=10, size=(32, 32))
    out = root / "out"
    rc = main(["compare", str(data), "--vary", "norm=batch,group", "--model", "vistrain/resnet-tiny",
               "--epochs", "1", "--batch-size", "8", "--set", "preprocess.size=32",
               "--augment", "none", "--set", "data.cache=off", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    return out


@pytest.mark.slow
def test_compare_writes_report_for_every_setting(compared):
    summary = json.loads((compared / "compare.json").read_text())
    assert round_trip_failures(compared) == [] and round_trip_failures(compared / "norm-batch") == []
    assert [r["name"] for r in summary["runs"]] == ["norm-batch", "norm-group"]
    assert summary["vary"] == {"norm": ["batch", "group"]} and summary["same_split"] is True
    for run in summary["runs"]:
        cfg = yaml.safe_load((compared / run["name"] / "config.yaml").read_text())
        assert cfg["model"]["norm"] == run["setting"]["norm"]
        assert cfg["model"]["name"] == "vistrain/resnet-tiny" and cfg["model"]["pretrained"] is False
        assert cfg["strategy"]["name"] == "finetune"        # from scratch: every layer trains
        assert 0.0 <= run["accuracy"] <= 1.0 and run["wall_seconds"] > 0
        assert len(run["history"]) == 1 and run["history"][0]["val_accuracy"] is not None
        metrics = json.loads((compared / run["name"] / "metrics.json").read_text())
        assert run["accuracy"] == metrics[run["part"]]["accuracy"]
    # the two runs really differ in their normalization layers
    from vistrain.artifact import load_model
    kinds = [{type(m).__name__ for m in load_model(compared / r["name"])[0].modules()}
             for r in summary["runs"]]
    assert "BatchNorm2d" in kinds[0] and "BatchNorm2d" not in kinds[1] and "GroupNorm" in kinds[1]
    page = (compared / "compare.html").read_text()
    assert "norm-batch" in page and "norm-group" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2                                   # curves + normalization axes
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    assert not re.search(r'src="(?!data:)', page)             # self-contained


@pytest.mark.slow
def test_compare_runs_share_the_split(compared):
    a, b = (json.loads((compared / name / "splits.json").read_text())
            for name in ("norm-batch", "norm-group"))
    assert a["parts"] == b["parts"] and a["seed"] == b["seed"]


@pytest.mark.slow
def test_scratch_artifact_round_trip(compared):
    """load_model rebuilds the scratch net from model.json's model_kwargs: identical logits."""
    from vistrain.artifact import load_model
    from vistrain.models import create
    run_dir = compared / "norm-group"
    model, meta = load_model(run_dir)
    assert meta["model_kwargs"]["norm"] == "group" and meta["model_kwargs"]["in_chans"] == 3
    from safetensors.torch import load_file
    state = load_file(str(run_dir / "model.safetensors"))
    fresh, _ = create("vistrain/resnet-tiny", 2, pretrained=False, **meta["model_kwargs"])
    with torch.no_grad():  # a fresh (untrained) net differs; with the saved weights it is equal
        x = torch.randn(3, 3, 32, 32)
        assert not torch.allclose(fresh.eval()(x), model(x))
        fresh.load_state_dict(state)
        assert torch.equal(fresh(x), model(x))
    # from files, the loaded classifier (stored preprocessing) gives the run's test predictions
    import vistrain
    preds = json.loads((run_dir / "predictions.json").read_text())["test"]
    split = json.loads((run_dir / "splits.json").read_text())
    files = [compared.parent / "data" / split["parts"]["test"]["files"][split["parts"]["test"]
             ["indices"].index(i)] for i in preds["indices"]]
    probs = vistrain.load(run_dir).predict_proba([str(f) for f in files])
    np.testing.assert_allclose(probs, np.asarray(preds["probs"]), atol=1e-4)


def test_scratch_layer_groups_cover_all_parameters():
    from vistrain.models import create
    from vistrain.training.layers import layer_groups
    model, _ = create("vistrain/resnet-tiny", 4, pretrained=False, norm="group", in_chans=1)
    groups = layer_groups(model)
    assert len(groups) == 5                                   # stem, 3 stages, head
    assert all(n.startswith("stem.") for n, _ in groups[0][1])
    assert all(n.startswith("stages.0.") for n, _ in groups[1][1])
    names = [n for _, ps in groups for n, _ in ps]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(names) == len(set(names))
    assert {"fc.weight", "fc.bias"} <= {n for n, _ in groups[-1][1]}


def test_train_flags_land_in_config(tmp_path):
    from vistrain.cli.main import build_parser
    from vistrain.cli.common import config_from_args
    args = build_parser().parse_args(["train", "DATA", "--model", "vistrain/resnet-small",
                                      "--norm", "group", "--act", "gelu", "--init", "xavier"])
    cfg = config_from_args(args, args.data)
    cfg.save(tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]
    assert (saved["name"], saved["norm"], saved["act"], saved["init"]) == \
        ("vistrain/resnet-small", "group", "gelu", "xavier")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["strategy"]["name"] == "finetune"
    args = build_parser().parse_args(["train", "DATA", "--model", "vistrain/resnet-tiny",
                                      "--strategy", "gradual"])
    assert config_from_args(args, "DATA").strategy.name == "gradual"   # explicit choice kept
    args = build_parser().parse_args(["train", "DATA"])                 # pretrained default kept
    assert config_from_args(args, "DATA").strategy.name == "auto"
    from vistrain.training.prepare import scratch_kwargs
    cfg.preprocess.grayscale = True
    assert scratch_kwargs(cfg)["in_chans"] == 1 and scratch_kwargs(cfg)["norm"] == "group"
    with pytest.raises(SystemExit):   # argparse rejects an unknown normalization
        build_parser().parse_args(["train", "DATA", "--norm", "batchy"])


def test_vary_parsing_and_product():
    vary = parse_vary(["norm=batch,layer", "act=relu,gelu", "optim.lr=0.1,0.01"])
    settings = settings_product(vary)
    assert len(settings) == 8 and settings[0] == {"norm": "batch", "act": "relu", "optim.lr": "0.1"}
    assert setting_name(settings[-1]) == "norm-layer_act-gelu_optim.lr-0.01"
    from vistrain.config import TrainConfig
    cfg = apply_setting(TrainConfig(), settings[-1])
    assert (cfg.model.norm, cfg.model.act, cfg.optim.lr) == ("layer", "gelu", 0.01)
    for bad in (["norm"], ["norm="], ["colour=red"], ["norm=a,a"], []):
        with pytest.raises(VistrainError):
            parse_vary(bad)
    with pytest.raises(VistrainError):
        apply_setting(TrainConfig(), {"optim.nope": "1"})
    # any setting's name, as its flag and keyword spell it, typed as --set types it
    cfg = apply_setting(TrainConfig(), {"lr": "0.01", "batch_size": "16", "budget": "none", "model": "resnet18"})
    assert (cfg.optim.lr, cfg.data.batch_size, cfg.train.budget, cfg.model.name) == (0.01, 16, None, "resnet18")
    with pytest.raises(VistrainError, match="data.batch_size"):
        apply_setting(TrainConfig(), {"batch_size": "0"})


def test_compare_html_escapes_names(tmp_path):
    run = {"name": "<script>x</script>", "setting": {}, "part": "test", "n_samples": 2,
           "accuracy": 0.5, "macro_f1": None, "macro_auc": None, "wall_seconds": 1.0,
           "history": [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "val_accuracy": 0.5}]}
    summary = {"model": "m&m", "data_root": "d", "vary": {"act": ["<b>"]}, "seed": 0,
               "split_seed": 0, "epochs": 1, "same_split": True, "runs": [run]}
    page = render_compare_report(summary)
    assert "<script>" not in page and "&lt;script&gt;" in page and "m&amp;m" in page
    assert "n/a" in page


@pytest.mark.slow
def test_scratch_model_in_compare_gets_the_train_learning_rate_and_learns(tmp_path):
    """A vistrain/ model in compare trains at the from-scratch default rate, the same as `train`
    gives it; at the fine-tuning rate (1e-4) it barely learned (test accuracy 0.67 here, the
    colours of 3 classes, 3 epochs) -- with the from-scratch rate it reaches 1.0."""
    from vistrain.cli.main import main
    from vistrain.training.plan import default_lr
    data = make_image_folder(tmp_path / "data", per_class=20, size=(32, 32))
    common = ["--model", "vistrain/resnet-tiny", "--batch-size", "8", "--set", "preprocess.size=32",
              "--augment", "none", "--set", "data.cache=off", "--device", "cpu"]
    assert main(["compare", str(data), "--vary", "norm=batch", "--epochs", "3",
                 "--out", str(tmp_path / "cmp"), *common]) == 0
    assert main(["train", str(data), "--epochs", "1", "--out", str(tmp_path / "train"), *common]) == 0
    lrs = {}
    for name, run_dir in (("compare", tmp_path / "cmp" / "norm-batch"), ("train", tmp_path / "train")):
        groups = json.loads((run_dir / "run.json").read_text())["strategy"]["param_groups"]
        lrs[name] = {g["lr"] for g in groups}
    assert lrs["compare"] == lrs["train"] == {default_lr("finetune", "adamw", pretrained=False)}
    assert default_lr("finetune", "adamw", pretrained=False) > default_lr("finetune", "adamw")
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    run = summary["runs"][0]
    assert run["lr"] == default_lr("finetune", "adamw", pretrained=False)
    assert run["accuracy"] >= 0.9                    # chance: 1/3
