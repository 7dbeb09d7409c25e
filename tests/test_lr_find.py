"""`vistrain lr-find` and the lr-finder of `vistrain check`: one range test, the same suggestion;
feature extraction tests the head on the cached, standardized features; --json prints one document."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from conftest import make_image_folder
from vistrain.cli.main import main

TINY = ["--set", "preprocess.size=32", "--device", "cpu", "--batch-size", "16"]
FEATURES = ["--model", "resnet18", "--no-pretrained", "--strategy", "feature-extraction"] + TINY
FINETUNE = ["--model", "vistrain/resnet-tiny", "--augment", "none"] + TINY


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one intra-op thread avoids spin-wait contention
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("lrfind") / "data", per_class=20, size=(32, 32))


def _json_stdout(capsys, argv, rc=0) -> object:
    assert main(argv) == rc
    out = capsys.readouterr().out
    return json.loads(out)  # the whole of stdout is one JSON document


def _check_suggestion(capsys, argv) -> dict:
    """The lr-finder measurements of `vistrain check --json` (exit 0 or 1: a check may fail)."""
    assert main(["check", *argv, "--json"]) in (0, 1)
    results = json.loads(capsys.readouterr().out)
    return {r["name"]: r for r in results}["lr-finder"]["measurements"]


@pytest.mark.parametrize("options", [FEATURES, FINETUNE], ids=["feature-extraction", "finetune"])
def test_lr_find_and_check_suggest_the_same_rate(folder, capsys, options):
    argv = [str(folder), *options]
    found = _json_stdout(capsys, ["lr-find", *argv, "--steps", "30", "--json"])
    checked = _check_suggestion(capsys, [*argv, "--lr-steps", "30", "--steps", "5"])
    assert found["suggestion"] is not None and len(found["lrs"]) > 3
    assert checked["suggestion"] == found["suggestion"]
    assert checked["trained_as"] == found["trained_as"]
    assert checked["configured_lr"] == found["configured_lr"]
    cached = "cached, standardized" in found["trained_as"]
    assert cached == (options is FEATURES)


def test_feature_extraction_lr_find_reuses_the_feature_cache_and_trains_the_head_only(
        folder, capsys, monkeypatch):
    import vistrain.training.features as features
    argv = ["lr-find", str(folder), *FEATURES, "--steps", "20", "--json"]
    first = _json_stdout(capsys, argv)                       # fills the feature cache

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone ran although the features were cached")
    monkeypatch.setattr(features, "extract_features", no_backbone)
    monkeypatch.setattr(torch.nn.Conv2d, "forward", no_backbone)  # no image reaches a convolution
    again = _json_stdout(capsys, argv)
    assert again["suggestion"] == first["suggestion"] and again["lrs"] == first["lrs"]


def test_feature_extraction_range_test_sees_standardized_features(folder, monkeypatch):
    """The head in the range test gets the same standardized inputs as the head training fits."""
    from vistrain.workflows.check import prepare
    from vistrain.cli.common import config_from_args
    from vistrain.cli.main import build_parser
    from vistrain.training import lrfind
    args = build_parser().parse_args(["lr-find", str(folder), *FEATURES])
    cfg = config_from_args(args, args.data)
    ctx = prepare(cfg, progress=False)
    data = ctx.data
    raw = np.random.default_rng(0).normal(5.0, 3.0, (len(data.index), 16)).astype(np.float32)
    raw[:, 3] = 0.0                                           # a constant dimension
    seen = []
    real = lrfind.lr_range_test

    def spy(model, batches, *args, **kwargs):
        seen.append(batches.array[np.asarray(data.parts["train"])])
        return real(model, batches, *args, **kwargs)
    monkeypatch.setattr(lrfind, "lr_range_test", spy)
    res = lrfind.run_range_test(ctx, steps=5, features=raw)
    z = seen[0]
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.delete(z.std(0), 3), 1, rtol=1e-4)
    assert np.all(z[:, 3] == 0)
    assert len(res["lrs"]) == 5


def test_lr_find_text_output_and_plot(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["lr-find", str(folder), *FINETUNE, "--steps", "12"]) == 0
    out = capsys.readouterr().out
    assert "suggested learning rate" in out and "end to end" in out
    assert not list(tmp_path.iterdir())                      # nothing written without --out
    assert main(["lr-find", str(folder), *FINETUNE, "--steps", "12", "--out", "lr.png"]) == 0
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["lr-find", str(folder), *FINETUNE, "--steps", "12", "--plot", "old.png"]) == 0
    assert (tmp_path / "old.png").stat().st_size > 1000       # the former flag name still works
    assert "--plot is deprecated; use --out" in capsys.readouterr().err


def test_lr_find_json_document(folder, tmp_path, capsys):
    res = _json_stdout(capsys, ["lr-find", str(folder), *FINETUNE, "--steps", "12", "--json",
                                "--out", str(tmp_path / "lr.png")])
    assert len(res["lrs"]) == 12 and res["lrs"][0] == pytest.approx(1e-7)
    assert len(res["losses"]) == len(res["raw_losses"]) == 12
    assert res["plot"] == str((tmp_path / "lr.png").resolve())
    assert {"suggestion", "min_div_10", "method", "configured_lr", "trained_as"} <= set(res)


def test_check_prints_each_result_once(folder, capsys, caplog):
    argv = ["check", str(folder), *FINETUNE, "--steps", "5", "--lr-steps", "10"]
    with caplog.at_level(logging.INFO, logger="vistrain"):
        rc = main(argv)
    assert rc in (0, 1)
    captured = capsys.readouterr()
    shown = captured.out + captured.err + "\n".join(r.getMessage() for r in caplog.records)
    for name in ("normalization", "overfit-small-sample", "label-shuffle", "lr-finder"):
        assert shown.count(f"] {name}:") == 1, (name, shown)
    results = _json_stdout(capsys, [*argv, "--json"], rc=rc)
    assert [r["name"] for r in results] == ["normalization", "overfit-small-sample",
                                            "label-shuffle", "lr-finder"]


@pytest.mark.parametrize("argv, needle", [
    (["lr-find", "--steps", "0"], "--steps 0"),
    (["lr-find", "--start-lr", "1", "--end-lr", "0.1"], "0 < start-lr < end-lr"),
    (["lr-find", "--end-lr", "nan"], "need finite rates"),
    (["check", "--lr-steps", "2"], "--lr-steps 2"),
    (["check", "--steps", "0"], "--steps 0"),
])
def test_impossible_range_tests_are_one_line_before_decoding(tmp_path, capsys, monkeypatch, argv, needle):
    import vistrain.training.prepare as prepare
    monkeypatch.setattr(prepare, "prepare_pixels", lambda *a, **k: pytest.fail("decoded images"))
    data = make_image_folder(tmp_path / "data", per_class=3)
    assert main([argv[0], str(data), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
