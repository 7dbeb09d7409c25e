"""Experiment tracking: ``--track mlflow`` against a real local MLflow file store (read back with
``mlflow.search_runs`` and ``MlflowClient``), the ``track`` setting of the table, the TensorBoard
alias ``logging.tensorboard=true``."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import vistrain
from conftest import make_image_folder
from vistrain.config import LoggingConfig
from vistrain.errors import VistrainError
from vistrain.training.loggers import trackers

mlflow = pytest.importorskip("mlflow")

TINY = dict(model="vistrain/resnet-tiny", strategy="finetune", epochs=2, device="cpu", batch_size=8,
            preprocess={"size": 32})


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh local MLflow file store for the test (no server)."""
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.mark.slow
def test_api_track_mlflow_logs_params_epochs_test_metrics_report_and_model(tmp_path, store):
    from mlflow.tracking import MlflowClient
    data = make_image_folder(tmp_path / "data", per_class=12)
    result = vistrain.train(data, out=tmp_path / "run", track=["mlflow"], **TINY)
    runs = mlflow.search_runs(experiment_names=["vistrain"])
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["status"] == "FINISHED" and row["tags.mlflow.runName"] == "run"
    assert row["params.model.name"] == "vistrain/resnet-tiny" and row["params.train.epochs"] == "2"
    assert row["metrics.test_accuracy"] == pytest.approx(result.metrics["test"]["accuracy"])
    client = MlflowClient(tracking_uri=store)
    history = client.get_metric_history(row["run_id"], "val_loss")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([h["val_loss"] for h in result.history])
    names = {f.path for f in client.list_artifacts(row["run_id"])}
    assert {"report.html", "config.yaml", "metrics.json", "history.csv", "model"} <= names, names
    model = {f.path for f in client.list_artifacts(row["run_id"], "model")}
    assert model == {"model/model.safetensors", "model/model.json"}


@pytest.mark.slow
def test_cli_track_mlflow_defaults_to_mlruns_in_the_working_folder(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=12)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    p = subprocess.run([sys.executable, "-m", "vistrain.cli.main", "train", str(data), "--out", "runs/t",
                        "--model", "vistrain/resnet-tiny", "--strategy", "finetune", "--epochs", "1",
                        "--set", "preprocess.size=32", "--device", "cpu", "--track", "mlflow"],
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "mlflow: run" in p.stderr
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
        runs = mlflow.search_runs(experiment_names=["vistrain"])
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE")
    assert len(runs) == 1 and "metrics.test_accuracy" in runs.columns


def test_track_is_a_setting_of_the_table_flag_and_keyword():
    from vistrain.config.settings import setting
    s = setting("track")
    assert s.option == "--track" and s.repeat and s.choices == ("tensorboard", "mlflow")
    cfg = vistrain.make_config("DATA", track=["mlflow", "tensorboard"])
    assert cfg.logging.track == ["mlflow", "tensorboard"]
    with pytest.raises(VistrainError, match="choose one of tensorboard, mlflow"):
        vistrain.make_config("DATA", track=["wandb"])


def test_help_documents_track():
    out = subprocess.run([sys.executable, "-m", "vistrain.cli.main", "train", "--help"],
                         capture_output=True, text=True, timeout=120).stdout
    assert "--track {tensorboard,mlflow}" in out and "repeatable" in out


def test_tensorboard_setting_stays_an_alias_of_track():
    assert trackers(LoggingConfig(tensorboard=True)) == ["tensorboard"]
    assert trackers(LoggingConfig(track=["tensorboard"], tensorboard=True)) == ["tensorboard"]
    assert trackers(LoggingConfig()) == []


@pytest.mark.slow
def test_track_tensorboard_writes_settings_epochs_and_test_metrics(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    data = make_image_folder(tmp_path / "data", per_class=12)
    vistrain.train(data, out=tmp_path / "run", track=["tensorboard"], **TINY)
    acc = event_accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"),
                                             size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert {"loss/train", "loss/val", "accuracy/val", "test/accuracy"} <= set(scalars), scalars
    assert [e.step for e in acc.Scalars("loss/train")] == [1, 2]           # one point per epoch
    config = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "strategy:" in config and "finetune" in config                  # the settings, as text
