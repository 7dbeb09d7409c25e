"""The reference client of the docs (``docs/reference_client.py``: onnxruntime, NumPy and Pillow,
no vistrain) reproduces ``vistrain predict`` from the export's metadata alone, on the images where
decoding has rules of its own: an EXIF-rotated JPEG, an RGBA PNG, a 16-bit PNG, JPEGs large enough
for reduced-scale decoding (baseline and progressive) and a palette PNG with transparency.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from conftest import make_image_folder
from test_export import make_run
from vistrain.cli.main import main
from vistrain.transforms.preprocess import Preprocess
from vistrain.workflows.export import export

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "docs" / "reference_client.py"


def noisy(w: int, h: int, seed: int, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, channels)).astype(np.float64)
    ramp = np.linspace(0, 1, w)[None, :, None] * np.linspace(0, 1, h)[:, None, None]
    return np.clip(base * 0.4 + ramp * 150 * (1 + np.arange(channels)) / channels, 0, 255).astype(np.uint8)


def tricky_images(folder: Path) -> list[Path]:
    folder.mkdir()
    rotated = Image.fromarray(noisy(60, 40, 1))
    exif = rotated.getexif()
    exif[0x0112] = 6  # stored landscape, shown portrait (rotate 90 clockwise)
    rotated.save(folder / "rotated.jpg", exif=exif.tobytes(), quality=92)
    rgba = np.dstack([noisy(50, 44, 2), np.tile(np.linspace(0, 255, 50, dtype=np.uint8), (44, 1))])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    deep = (noisy(45, 52, 3, 1)[..., 0].astype(np.uint16) * 257 + np.arange(45, dtype=np.uint16)[None, :] * 3)
    Image.fromarray(deep).save(folder / "deep16.png")
    assert Image.open(folder / "deep16.png").mode == "I;16"
    Image.fromarray(noisy(400, 320, 4)).save(folder / "large.jpg", quality=90)
    Image.fromarray(noisy(640, 480, 5)).save(folder / "progressive.jpg", quality=90, progressive=True)
    palette = Image.fromarray(noisy(40, 40, 6)).quantize(16)
    palette.save(folder / "palette.png", transparency=3)
    return sorted(folder.iterdir())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client")
    data = make_image_folder(tmp / "data", per_class=8)
    pre = Preprocess(size=32, normalize_mode="symmetric", mean=(0.5,) * 3, std=(0.5,) * 3,
                     background=(40, 200, 90))  # not white: the alpha rule must read the metadata
    run = make_run(tmp / "run", data, pre)
    meta = json.loads((run / "model.json").read_text())
    meta["calibration"] = {"temperature": 1.7}  # applied inside the graph, not by the client
    (run / "model.json").write_text(json.dumps(meta))
    export(run, progress=False)
    return run, tricky_images(tmp / "images")


def predict_json(run: Path, images: list[Path], engine: str, capsys) -> dict[str, list]:
    assert main(["predict", str(run), *map(str, images), "--json", "--top-k", "3",
                 "--engine", engine]) == 0
    doc = json.loads(capsys.readouterr().out)
    return {Path(p["image"]).name: p["top"] for p in doc["predictions"]}


@pytest.mark.parametrize("engine", ["onnxruntime", "torch"])
def test_reference_client_reproduces_predict(exported, engine, capsys):
    run, images = exported
    out = subprocess.run([sys.executable, str(CLIENT), str(run / "export" / "model.onnx"), *map(str, images)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    client = {Path(image).name: probs for image, probs in json.loads(out).items()}
    want = predict_json(run, images, engine, capsys)
    assert sorted(client) == sorted(want) == sorted(p.name for p in images)
    for name, top in want.items():
        probs = client[name]
        assert max(probs, key=probs.get) == top[0]["class"], name
        np.testing.assert_allclose([probs[t["class"]] for t in top], [t["probability"] for t in top],
                                   rtol=0, atol=1e-4, err_msg=name)
        assert abs(sum(probs.values()) - 1) < 1e-5


@pytest.mark.parametrize("resize_mode", ["letterbox", "stretch"])
def test_reference_client_follows_the_other_resize_modes(tmp_path, resize_mode, capsys):
    data = make_image_folder(tmp_path / "data", per_class=4)
    pre = Preprocess(size=32, resize_mode=resize_mode, fill=70, normalize_mode="symmetric",
                     mean=(0.5,) * 3, std=(0.5,) * 3)
    run = make_run(tmp_path / "run", data, pre)
    export(run, progress=False)
    images = [p for p in tricky_images(tmp_path / "images") if p.suffix == ".png" or "rotated" in p.name]
    out = subprocess.run([sys.executable, str(CLIENT), str(run / "export" / "model.onnx"), *map(str, images)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    client = {Path(image).name: probs for image, probs in json.loads(out).items()}
    for name, top in predict_json(run, images, "onnxruntime", capsys).items():
        probs = client[name]
        np.testing.assert_allclose([probs[t["class"]] for t in top], [t["probability"] for t in top],
                                   rtol=0, atol=1e-4, err_msg=f"{resize_mode} {name}")


def test_metadata_states_the_decode_rules_and_the_temperature(exported):
    run, _ = exported
    meta = {p.key: p.value for p in onnx.load(str(run / "export" / "model.onnx")).metadata_props}
    assert meta["temperature_applied_in_graph"] == "true" and json.loads(meta["temperature"]) == 1.7
    decode = json.loads(meta["decode"])
    assert decode["alpha"]["background"] == [40, 200, 90]
    assert {"exif_orientation", "high_bit_depth", "jpeg_reduced_decode", "colour", "order"} <= set(decode)
    assert "floor(size / crop_pct)" in json.loads(meta["resize"])["rounding"]


def test_docs_show_the_client_verbatim():
    text = (ROOT / "docs" / "serving.md").read_text()
    assert f"```python\n{CLIENT.read_text()}```" in text
    tree = ast.parse(CLIENT.read_text())
    docstring_lines = len(ast.get_docstring(tree, clean=False).splitlines())
    code = [line for line in CLIENT.read_text().splitlines()[docstring_lines:] if line.strip()]
    assert len(code) <= 30, f"the reference client has {len(code)} lines of code"
    imports = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imports |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imports <= {"json", "math", "sys", "numpy", "onnxruntime", "PIL"}
