"""Integrity everywhere vistrain reads: every artifact, damaged in any way, gives the right result,
a one-line error naming it and the fix, or (an export) a one-line warning and the weights instead;
never a traceback and never a NaN.

Named tests hold the failures found by hand (images swapped across classes, labels edited in
index.json, a tampered export, damaged weights, resume on changed data or with another run's
checkpoint); the property-based tests (Hypothesis) damage each artifact at random: truncation at
any offset, bit flips, zeroed ranges, garbage, an empty file.  One tiny run is trained per module.
"""
from __future__ import annotations

import io
import json
import logging
import math
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import vistrain.training.strategy as strategy
from vistrain.artifact_meta import WEIGHTS, DamagedModelError, check_finite_probabilities
from vistrain.cli.main import main
from vistrain.data.cache.build import build_pixel_cache
from vistrain.data.scan import scan_folder
from vistrain.data.shards.stream import ShardBatches
from vistrain.data.shards.write import write_shards
from vistrain.deploy.parity import split_files
from vistrain.errors import VistrainError
from vistrain.predictor import Classifier
from vistrain.server.app import create_app
from vistrain.training.checkpoint import CheckpointError, load_checkpoint
from vistrain.transforms.preprocess import Preprocess
from tests.conftest import cli_error, make_image_folder, skip_report

FLAGS = ["--model", "vistrain/resnet-tiny", "--epochs", "1", "--batch-size", "16",
         "--set", "preprocess.size=32", "--set", "data.cache=off", "--set", "data.num_workers=0",
         "--set", "train.patience=null", "--set", "data.doctor=false"]
FEW = settings(max_examples=15, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])




@pytest.fixture(autouse=True)
def quick(monkeypatch):
    skip_report(monkeypatch)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """``{"data", "run", "shards"}``: 60 images of 32 px, a scratch run of 1 epoch on them with
    its ONNX export, and the images packed into several uncompressed shards."""
    root = tmp_path_factory.mktemp("integrity")
    data = make_image_folder(root / "data", per_class=20, size=(32, 32))
    with pytest.MonkeyPatch.context() as mp:
        skip_report(mp)
        # checkpoints kept: their damage is one of the cases below
        assert main(["train", str(data), "--out", str(root / "run"), *FLAGS, "--keep-checkpoints"]) == 0
        assert main(["export", str(root / "run")]) == 0
    write_shards(scan_folder(data), root / "shards", shard_bytes=20_000, workers=0, progress=False,
                 compress="none")
    return {"data": data, "run": root / "run", "shards": root / "shards", "root": root}


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text and text.strip(), text
    return text


def stream(shards) -> tuple[np.ndarray, np.ndarray]:
    """Every sample of ``shards``, in order: ``(x (N, 3, 16, 16), y (N,))``."""
    xs, ys = zip(*ShardBatches(shards, size=16, batch_size=16, streams=2))
    return torch.cat(xs).numpy(), torch.cat(ys).numpy()


def shard_tars(folder: Path) -> list[Path]:
    return sorted(folder.glob("shard-*.tar"))


def copy_of(src: Path, where: Path) -> Path:
    dst = where / src.name
    shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
    return dst


# ---- damaged bytes, drawn by Hypothesis --------------------------------------------------------------
@st.composite
def damaged(draw, data: bytes) -> bytes:
    """``data`` truncated at a random offset, with a bit flipped, a range zeroed, replaced by
    garbage, or empty."""
    n, kind = len(data), draw(st.sampled_from(["truncate", "flip", "zero", "garbage", "empty"]))
    if kind == "truncate":
        return data[:draw(st.integers(0, n - 1))]
    out = bytearray(data)
    if kind == "flip":
        bit = draw(st.integers(0, 8 * n - 1))
        out[bit // 8] ^= 1 << (bit % 8)
    elif kind == "zero":
        a = draw(st.integers(0, n - 1))
        b = min(n, a + draw(st.integers(1, 4096)))
        out[a:b] = bytes(b - a)
    elif kind == "garbage":
        return draw(st.binary(min_size=1, max_size=4096))
    else:
        return b""
    return bytes(out)


def damage_with(draw, path: Path) -> bytes:
    """Overwrite ``path`` with a damaged version of its bytes; returns the original bytes."""
    original = path.read_bytes()
    path.write_bytes(draw(damaged(original)))
    return original


# ---- shards and index.json ---------------------------------------------------------------------------
def _rewrite_tar(path: Path, edit) -> None:
    """Rewrite the tar ``path`` with ``edit(dict name -> bytes)`` applied to its members."""
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    edit(members)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.slow
def test_images_swapped_across_classes_stop_the_stream(world, tmp_path):
    shards = copy_of(world["shards"], tmp_path)
    tar = shard_tars(shards)[0]

    def swap(members):  # the first two images of different classes trade places
        cls = {n[:-4]: m for n, m in members.items() if n.endswith(".cls")}
        a = next(iter(cls))
        b = next(k for k, v in cls.items() if v != cls[a])
        members[f"{a}.png"], members[f"{b}.png"] = members[f"{b}.png"], members[f"{a}.png"]
    _rewrite_tar(tar, swap)
    with pytest.raises(VistrainError) as err:
        stream(shards)
    line = one_line(err.value)
    assert tar.name in line and "sha256" in line and "vistrain pack" in line


@pytest.mark.slow
def test_training_on_swapped_shards_ends_in_one_line(world, tmp_path, capsys):
    shards = copy_of(world["shards"], tmp_path)
    _rewrite_tar(shard_tars(shards)[-1], lambda m: m.update(
        {k: m[k] + b"\0" for k in list(m) if k.endswith(".png")}))
    line = cli_error(capsys, ["train", str(shards), "--out", str(tmp_path / "run"), *FLAGS])
    assert shard_tars(shards)[-1].name in line and "pack" in line


@pytest.mark.slow
def test_index_labels_that_disagree_with_the_shards_are_an_error(world, tmp_path):
    shards = copy_of(world["shards"], tmp_path)
    doc = json.loads((shards / "index.json").read_text())
    doc["labels"][0] = (doc["labels"][0] + 1) % len(doc["classes"])   # counts left as they were
    (shards / "index.json").write_text(json.dumps(doc))
    with pytest.raises(VistrainError) as err:
        stream(shards)
    line = one_line(err.value)
    assert shard_tars(shards)[0].name in line and "index.json" in line and "pack" in line


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated", "bit-flipped", "missing", "empty", "directory",
                                 "index edited", "index garbage"])
def test_damaged_shards_are_one_line_naming_the_shard(world, tmp_path, how):
    shards = copy_of(world["shards"], tmp_path)
    tar = shard_tars(shards)[1]
    data = tar.read_bytes()
    if how == "truncated":
        tar.write_bytes(data[:len(data) // 3])
    elif how == "bit-flipped":
        tar.write_bytes(data[:700] + bytes([data[700] ^ 4]) + data[701:])
    elif how == "missing":
        tar.unlink()
    elif how == "empty":
        tar.write_bytes(b"")
    elif how == "directory":
        tar.unlink()
        tar.mkdir()
    elif how == "index edited":
        doc = json.loads((shards / "index.json").read_text())
        doc["shards"][1]["samples"] += 3
        (shards / "index.json").write_text(json.dumps(doc))
    else:
        (shards / "index.json").write_text('{"format": "vistrain-webdataset", "version": 2, "shards": 7}')
    with pytest.raises(VistrainError) as err:
        stream(shards)
    line = one_line(err.value)
    named = "index.json" if how.startswith("index") else tar.name
    assert named in line and "pack" in line


@pytest.mark.slow
@FEW
@given(st.data())
def test_any_damage_to_shards_or_index_is_caught_or_harmless(world, data):
    want = stream(world["shards"])
    with tempfile.TemporaryDirectory() as tmp:
        shards = copy_of(world["shards"], Path(tmp))
        target = data.draw(st.sampled_from([*shard_tars(shards), shards / "index.json"]))
        damage_with(data.draw, target)
        try:
            got = stream(shards)
        except VistrainError as err:
            assert "pack" in one_line(err)
        else:  # nothing that changes what training sees went unnoticed
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.mark.slow
def test_streaming_workers_report_damage_in_one_line(world, tmp_path):
    shards = copy_of(world["shards"], tmp_path)
    tar = shard_tars(shards)[0]
    tar.write_bytes(tar.read_bytes()[:-2048] + bytes(2048) + b"x")
    with pytest.raises(VistrainError) as err:
        list(ShardBatches(shards, size=16, batch_size=16, num_workers=2, streams=2))
    assert tar.name in one_line(err.value)


# ---- exports -----------------------------------------------------------------------------------------
def torch_probs(world, pixels) -> np.ndarray:
    return Classifier.from_run(world["run"], engine="torch").predict_pixels(pixels)


def sample_pixels(world) -> list[torch.Tensor]:
    pre = Classifier.from_run(world["run"], engine="torch").preprocess
    return [pre.pixels(p) for p in sorted(world["data"].rglob("*.png"))[:6]]


@pytest.fixture
def run_copy(world, tmp_path) -> Path:
    return copy_of(world["run"], tmp_path)


@pytest.mark.slow
def test_tampered_export_with_intact_metadata_is_not_used(world, run_copy, caplog, capsys):
    import onnx
    from onnx import numpy_helper
    path = run_copy / "export" / "model.onnx"
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 3.0
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(path))                   # the metadata (weights hash, classes) untouched
    with caplog.at_level(logging.WARNING, logger="vistrain"):
        clf = Classifier.from_run(run_copy)
    assert clf.engine == "torch" and "graph differs" in caplog.text
    with pytest.raises(VistrainError) as err:
        Classifier.from_run(run_copy, engine="onnxruntime")
    assert "model.onnx" in one_line(err.value) and "vistrain export" in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["garbage", "truncated", "empty"])
def test_garbage_export_falls_back_to_the_weights(world, run_copy, tmp_path, capsys, caplog, how):
    path = run_copy / "export" / "model.onnx"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not an onnx file" * 40, "truncated": data[:len(data) // 2],
                      "empty": b""}[how])
    image = sorted(world["data"].rglob("*.png"))[0]
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="vistrain"):
        assert main(["predict", str(run_copy), str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == "torch"
    assert "model.onnx is damaged" in caplog.text and "predicting with torch" in caplog.text
    assert main(["evaluate", str(run_copy), str(world["data"]), "--out", str(tmp_path / "ev"),
                 "--bootstrap", "0"]) == 0
    app = create_app(Classifier.from_run(run_copy))
    assert app.state.service.clf.engine == "torch"
    app.state.service.close()
    line = cli_error(capsys, ["predict", str(run_copy), str(image), "--engine", "onnxruntime"])
    assert "model.onnx" in line and "damaged" in line


@pytest.mark.slow
@FEW
@given(st.data())
def test_any_damage_to_the_export_falls_back_or_agrees(world, data):
    pixels = sample_pixels(world)
    want = torch_probs(world, pixels)
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_of(world["run"], Path(tmp))
        damage_with(data.draw, run / "export" / "model.onnx")
        clf = Classifier.from_run(run)
        got = clf.predict_pixels(pixels)
        assert np.abs(got - want).max() < 1e-4, clf.engine
        try:
            got = Classifier.from_run(run, engine="onnxruntime").predict_pixels(pixels)
        except VistrainError as err:
            assert "model.onnx" in one_line(err)
        else:
            assert np.abs(got - want).max() < 1e-4


# ---- weights, model.json, probabilities ----------------------------------------------------------
def test_finite_check_names_the_artifact():
    with pytest.raises(DamagedModelError) as err:
        check_finite_probabilities(np.array([[0.5, np.nan], [0.5, 0.5]]), "runs/x/model.safetensors")
    line = one_line(err.value)
    assert line.startswith("runs/x/model.safetensors gives non-finite probabilities for 1 of 2")
    assert "retrain or restore the run" in line


def _negative_variance(run: Path) -> None:
    state = load_file(str(run / WEIGHTS))
    name = next(k for k in state if k.endswith("running_var"))
    state[name] = -state[name].abs() - 1.0
    save_file(state, str(run / WEIGHTS))


def _tiny_temperature(run: Path) -> None:
    meta = json.loads((run / "model.json").read_text())
    meta["calibration"] = {"temperature": 1e-300}
    (run / "model.json").write_text(json.dumps(meta))


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_negative_variance, _tiny_temperature])
def test_damaged_weights_or_temperature_never_give_nan(world, run_copy, tmp_path, capsys, damage):
    shutil.rmtree(run_copy / "export")   # the weights themselves compute the probabilities
    damage(run_copy)
    image = str(sorted(world["data"].rglob("*.png"))[0])
    for argv in (["predict", str(run_copy), image, "--json"],
                 ["evaluate", str(run_copy), str(world["data"]), "--bootstrap", "0", "--json"]):
        line = cli_error(capsys, argv)
        if damage is _negative_variance:
            assert "model.safetensors gives non-finite probabilities" in line
            assert "retrain or restore the run" in line
        else:  # a temperature no fit can give is refused when model.json is read
            assert "model.json" in line and "calibration.temperature" in line
        assert "NaN" not in capsys.readouterr().out
    with pytest.raises(VistrainError):
        create_app(Classifier.from_run(run_copy))


@pytest.mark.slow
def test_explanations_of_damaged_weights_are_one_line(world, run_copy, tmp_path):
    from vistrain.workflows.explain import explain
    _negative_variance(run_copy)
    with pytest.raises(DamagedModelError) as err:
        explain(run_copy, [sorted(world["data"].rglob("*.png"))[0]], out=tmp_path / "ex")
    assert "model.safetensors gives non-finite probabilities" in one_line(err.value)


@pytest.mark.slow
@FEW
@given(st.data())
def test_any_damage_to_weights_or_model_json_is_caught_or_finite(world, data):
    pixels = sample_pixels(world)
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_of(world["run"], Path(tmp))
        shutil.rmtree(run / "export")
        damage_with(data.draw, run / data.draw(st.sampled_from([WEIGHTS, "model.json"])))
        try:
            probs = Classifier.from_run(run).predict_pixels(pixels)
        except VistrainError as err:
            one_line(err)
        else:
            assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_json_output_never_holds_nan(capsys, monkeypatch):
    from vistrain.cli.common import print_json
    with pytest.raises(VistrainError) as err:
        print_json({"probability": math.nan})
    one_line(err.value)
    assert "NaN" not in capsys.readouterr().out


# ---- checkpoints, splits.json, the pixel cache --------------------------------------------------------
@pytest.mark.slow
@FEW
@given(st.data())
def test_any_damage_to_a_checkpoint_is_caught_or_harmless(world, data):
    src = world["run"] / "checkpoints" / "last.pt"
    want = load_checkpoint(src)
    with tempfile.TemporaryDirectory() as tmp:
        path = copy_of(src, Path(tmp))
        damage_with(data.draw, path)
        try:
            got = load_checkpoint(path)
        except CheckpointError as err:
            one_line(err)
        else:
            assert got is not None and got["epoch"] == want["epoch"]
            assert all(torch.equal(got["model"][k], v) for k, v in want["model"].items())


@pytest.mark.slow
@FEW
@given(st.data())
def test_any_damage_to_splits_json_is_caught_or_harmless(world, data):
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_of(world["run"], Path(tmp))
        damage_with(data.draw, run / "splits.json")
        try:
            _, root, files = split_files(run, "test")
        except VistrainError as err:
            one_line(err)
        else:
            assert all((root / f).resolve().is_relative_to(world["data"].resolve()) for f in files)


@pytest.mark.slow
@FEW
@given(st.data())
def test_any_damage_to_the_pixel_cache_is_rebuilt(world, data):
    paths = sorted(world["data"].rglob("*.png"))[:12]
    pre = Preprocess(size=16)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        want, _ = build_pixel_cache(paths, pre.pixels, (3, 16, 16), cache_dir=cache, workers=0,
                                    progress=False)
        want = np.array(want)
        files = sorted(p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
        damage_with(data.draw, data.draw(st.sampled_from(files)))
        try:
            got, _ = build_pixel_cache(paths, pre.pixels, (3, 16, 16), cache_dir=cache, workers=0,
                                       progress=False)
        except VistrainError as err:
            one_line(err)
        else:
            assert np.array_equal(np.array(got), want)


# ---- resume ------------------------------------------------------------------------------------------
def killed_run(monkeypatch, data: Path, out: Path) -> Path:
    """A run of 2 epochs interrupted (KeyboardInterrupt) after its first."""
    real, calls = strategy.train_one_epoch, {"n": 0}

    def dies(*a, **k):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(strategy, "train_one_epoch", dies)
    flags = [f if f != "1" else "2" for f in FLAGS]   # --epochs 2
    assert main(["train", str(data), "--out", str(out), *flags]) == 130
    monkeypatch.setattr(strategy, "train_one_epoch", real)
    return out


@pytest.mark.slow
def test_resume_refuses_same_size_content_changes(world, tmp_path, monkeypatch, capsys):
    data = copy_of(world["data"], tmp_path)
    run = killed_run(monkeypatch, data, tmp_path / "run")
    image = sorted(data.rglob("*.png"))[5]
    other = sorted(data.rglob("*.png"))[-5]
    a, b = image.read_bytes(), other.read_bytes()
    image.write_bytes(b[:len(a)].ljust(len(a), b"\0"))   # same name, same size, other bytes
    line = cli_error(capsys, ["train", "--resume", str(run)])
    assert "not the data" in line and "contents" in line
    image.write_bytes(a)
    assert main(["train", "--resume", str(run)]) == 0


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_run(world, tmp_path, monkeypatch, capsys):
    run_a = killed_run(monkeypatch, world["data"], tmp_path / "a")
    run_b = killed_run(monkeypatch, world["data"], tmp_path / "b")
    for name in ("last.pt", "prev.pt"):
        if (run_a / "checkpoints" / name).exists():
            shutil.copy(run_a / "checkpoints" / name, run_b / "checkpoints" / name)
    line = cli_error(capsys, ["train", "--resume", str(run_b)])
    assert "another run" in line and "last.pt" in line
    shutil.rmtree(run_b)


@pytest.mark.slow
def test_old_checkpoint_without_a_run_id_still_resumes(world, tmp_path, monkeypatch, caplog):
    from vistrain import fsutil
    from vistrain.training.checkpoint import save_checkpoint
    run = killed_run(monkeypatch, world["data"], tmp_path / "run")
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    state.pop("run_id")
    marker = {k: v for k, v in fsutil.read_marker(run).items() if k not in ("run_id", "id")}
    fsutil.atomic_write_json(run / fsutil.MARKER, marker)   # an older run's marker: no id anywhere
    save_checkpoint(run / "checkpoints" / "last.pt", state)
    assert "run_id" not in load_checkpoint(run / "checkpoints" / "last.pt")
    with caplog.at_level(logging.WARNING, logger="vistrain"):
        assert main(["train", "--resume", str(run)]) == 0
    assert "records no run id" in caplog.text
