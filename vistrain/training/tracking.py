"""Send a finished run to MLflow (``--track mlflow``, ``logging.track: [mlflow]``).

One MLflow run per vistrain run (each fold of ``cv`` and each setting of ``compare`` is its own):
the settings of ``config.yaml`` as params (``optim.lr``, ...), every epoch of ``history.json`` as
metrics at step = epoch (``train_loss``, ``val_accuracy``, ``lr``, ...), the final metrics of
``metrics.json`` (``test_accuracy``, ``test_macro_f1``, ...), and as artifacts ``report.html``,
the run's record files and the model (``model/``: ``model.safetensors`` + ``model.json``, what
``vistrain.load`` reads).  No server: the store is ``$MLFLOW_TRACKING_URI`` when set, else the
local file store ``./mlruns`` (``mlflow ui`` in that folder shows it); the experiment is
``$MLFLOW_EXPERIMENT_NAME`` or ``vistrain``.

Example:
    >>> from vistrain.training.tracking import track_to_mlflow
    >>> run_id = track_to_mlflow("runs/demo")            # doctest: +SKIP
    >>> import mlflow; mlflow.search_runs(experiment_names=["vistrain"]).shape[0] >= 1  # doctest: +SKIP
    True
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import yaml

from vistrain.training.loggers import final_scalars, history_csv

log = logging.getLogger("vistrain")

EXPERIMENT = "vistrain"
RECORD_FILES = ("config.yaml", "run.json", "metrics.json", "history.json", "splits.json", "curves.png")
MODEL_FILES = ("model.safetensors", "model.json")


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the file store ``./mlruns`` of the working folder."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    # MLflow 3 refuses its file store unless asked: a local folder needs no server or database
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (Path.cwd() / "mlruns").as_uri()


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """``{"optim.lr": "0.001", ...}``: a nested config as MLflow params (values as text).

    Example:
        >>> flat_params({"optim": {"lr": 0.001, "name": "adamw"}, "train": {"track": None}})
        {'optim.lr': '0.001', 'optim.name': 'adamw', 'train.track': 'None'}
    """
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, name + "."))
        else:
            out[name] = str(value)[:500]  # MLflow keeps params short
    return out


def _read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def track_to_mlflow(run_dir: str | Path) -> str:
    """Log the finished run ``run_dir`` as one MLflow run; returns the MLflow run id."""
    from mlflow.entities import Metric, Param, RunTag  # optional dependency: only with --track mlflow
    from mlflow.tracking import MlflowClient

    run_dir = Path(run_dir)
    uri = tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or EXPERIMENT
    found = client.get_experiment_by_name(name)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(name)
    run = client.create_run(experiment_id, run_name=run_dir.name,
                            tags={"vistrain.run_dir": str(run_dir.resolve())})
    run_id = run.info.run_id
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        params = [Param(k, v) for k, v in flat_params(config).items()]
        now = int(time.time() * 1000)
        history = _read_json(run_dir / "history.json", [])
        metrics = [Metric(key, float(value), now, int(row.get("epoch", step + 1)))
                   for step, row in enumerate(history) for key, value in row.items()
                   if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)]
        metrics += [Metric(key, value, now, len(history))
                    for key, value in final_scalars(_read_json(run_dir / "metrics.json", {})).items()]
        for start in range(0, max(len(params), len(metrics)), 100):  # MLflow's batch limits
            client.log_batch(run_id, metrics=metrics[start:start + 100], params=params[start:start + 100],
                             tags=[RunTag("vistrain.strategy", str(config.get("strategy", {}).get("name")))]
                             if start == 0 else [])
        for file in ("report.html", *RECORD_FILES, history_csv(run_dir).name):
            if (run_dir / file).is_file():
                client.log_artifact(run_id, str(run_dir / file))
        for file in MODEL_FILES:
            if (run_dir / file).is_file():
                client.log_artifact(run_id, str(run_dir / file), artifact_path="model")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    log.info("mlflow: run %s in experiment %r at %s", run_id, name, uri)
    return run_id
