"""The artifact round trip, the main job end to end on a tiny folder, and CLI errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vistrain.cli.main import main
from tests.conftest import make_image_folder

TINY = ["--model", "resnet18", "--no-pretrained", "--set", "preprocess.size=32", "--epochs", "2",
        "--batch-size", "8", "--set", "data.cache=off", "--set", "data.num_workers=0", "--keep-checkpoints"]


class TestRunDirectory:
    def test_contents(self, tiny_run):
        out = tiny_run.dir
        for name in ("model.safetensors", "model.json", "config.yaml", "metrics.json", "splits.json",
                     "history.json", "curves.png", "report.html", "run.json"):
            assert (out / name).is_file(), name
        meta = json.loads((out / "model.json").read_text())
        assert meta["classes"] == ["a", "b", "c"] and meta["preprocess"]["size"] == 32
        assert meta["preprocess"]["normalize_mode"] == "dataset"  # from scratch -> data statistics
        assert set(meta["versions"]) >= {"torch", "timm", "vistrain"}
        cfg = (out / "config.yaml").read_text()
        assert "label_smoothing" in cfg and "epochs: 2" in cfg  # every setting, defaults included
        splits = json.loads((out / "splits.json").read_text())
        assert sum(len(p["indices"]) for p in splits["parts"].values()) == 30

    def test_round_trip_gives_identical_logits(self, tiny_run):
        from vistrain.artifact import load_model
        from vistrain.training.checkpoint import load_checkpoint
        out = tiny_run.dir
        model, meta = load_model(out)
        best = load_checkpoint(out / "checkpoints" / "last.pt")["best_state"]
        ref, _ = load_model(out)
        ref.load_state_dict(best)
        x = torch.randn(4, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(model(x), ref(x))

    def test_api_predict_equals_cli_json(self, tiny_run, capsys):
        import vistrain
        data, out = tiny_run.data, tiny_run.dir
        img = sorted((data / "b").glob("*.png"))[0]
        api = vistrain.load(out).predict([img], top_k=2)[0]
        capsys.readouterr()
        assert main(["predict", str(out), str(img), "--json", "--top-k", "2"]) == 0
        cli = json.loads(capsys.readouterr().out)["predictions"][0]
        assert [t["class"] for t in cli["top"]] == [t["class"] for t in api["top"]]
        assert np.isclose(cli["top"][0]["probability"], api["top"][0]["probability"])

    def test_evaluate_json(self, tiny_run, capsys):
        data, out = tiny_run.data, tiny_run.dir
        capsys.readouterr()
        assert main(["evaluate", str(out), str(data), "--json", "--bootstrap", "50"]) == 0
        m = json.loads(capsys.readouterr().out)
        assert m["n_samples"] == 30 and 0 <= m["accuracy"] <= 1


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vistrain.cli.main", *args], capture_output=True,
                          text=True, timeout=300)


class TestBadInputErrors:
    """One line naming the path and the fix, exit code != 0, no traceback."""

    def check(self, res, needle):
        assert res.returncode != 0
        assert "Traceback" not in res.stderr
        lines = [l for l in res.stderr.strip().splitlines() if l.startswith("error:")]
        assert len(lines) == 1 and needle in lines[0], res.stderr

    def test_missing_folder(self, tmp_path):
        self.check(run_cli("train", str(tmp_path / "nope")), str(tmp_path / "nope"))

    @pytest.mark.slow
    def test_empty_folder(self, tmp_path):
        (tmp_path / "empty").mkdir()
        self.check(run_cli("train", str(tmp_path / "empty")), "no class sub-folders")

    @pytest.mark.slow
    def test_one_class(self, tmp_path):
        make_image_folder(tmp_path / "one", classes=("only",), per_class=3)
        self.check(run_cli("train", str(tmp_path / "one")), "only 1 class")

    @pytest.mark.slow
    def test_empty_class(self, tmp_path):
        make_image_folder(tmp_path / "d", classes=("a", "b"), per_class=3)
        (tmp_path / "d" / "c").mkdir()
        self.check(run_cli("train", str(tmp_path / "d")), "without images: c")

    def test_missing_run_dir(self, tmp_path):
        self.check(run_cli("predict", str(tmp_path / "norun"), "x.png"), str(tmp_path / "norun"))

    @pytest.mark.slow
    def test_unreadable_image_in_predict(self, tiny_run, tmp_path):
        out = tiny_run.dir
        bad = tmp_path / "bad.png"
        bad.write_text("not an image")
        self.check(run_cli("predict", str(out), str(bad)), str(bad))

    @pytest.mark.slow
    def test_unreadable_images_fail_mode(self, tmp_path):
        data = make_image_folder(tmp_path / "d", per_class=6)
        (data / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        res = run_cli("train", str(data), "--on-bad-image", "fail", *TINY)
        self.check(res, "broken.png")


@pytest.mark.slow
def test_predict_pretrained_lite0_cli_json(tmp_path):
    """`vistrain predict --model tf_efficientnet_lite0 cat.png --json`: the golden answer from the CLI."""
    from PIL import Image
    from skimage import data
    cat = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(cat)
    res = run_cli("predict", "--model", "tf_efficientnet_lite0", str(cat), "--json")
    assert res.returncode == 0, res.stderr
    top = json.loads(res.stdout)["predictions"][0]["top"][0]
    assert 281 <= top["index"] <= 285 and "cat" in top["class"]
