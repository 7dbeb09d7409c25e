"""``vistrain explain``: PNGs written and printed, class by name/index, layers, ViT, no hooks left."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import make_image_folder
from vistrain.cli.main import main
from vistrain.errors import VistrainError
from vistrain.transforms.preprocess import Preprocess


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def run_and_images(tmp_path_factory):
    from vistrain.artifact import save_model
    from vistrain.models import create
    tmp = tmp_path_factory.mktemp("explain")
    data = make_image_folder(tmp / "data", classes=("cat", "dog", "eel"), per_class=2, size=(40, 32))
    torch.manual_seed(0)
    kwargs = {"input_size": 32}
    model, _ = create("vistrain/resnet-tiny", 3, pretrained=False, **kwargs)
    pre = Preprocess(size=32, normalize_mode="symmetric", mean=(0.5,) * 3, std=(0.5,) * 3)
    save_model(tmp / "run", model, model_name="vistrain/resnet-tiny", classes=["cat", "dog", "eel"],
               preprocess=pre, model_kwargs=kwargs)
    return tmp / "run", sorted(str(p) for p in data.glob("*/*.png"))[:3]


def hooks_and_flags(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), m.training)
            for m in model.modules()], [p.requires_grad for p in model.parameters()]


def test_explain_writes_and_prints_overlays(run_and_images, tmp_path, capsys):
    run, images = run_and_images
    rc = main(["explain", str(run), *images, "--method", "layercam", "--class", "dog", "--out",
               str(tmp_path), "--feature-maps"])
    out = capsys.readouterr().out
    assert rc == 0
    pngs = sorted(tmp_path.glob("*.png"))
    assert len([p for p in pngs if p.name.endswith("_layercam.png")]) == 3
    assert len([p for p in pngs if p.name.endswith("_feature_maps.png")]) == 3
    for p in pngs:
        assert p.stat().st_size > 1000 and str(p) in out
    assert out.count("layercam for dog") == 3


def test_explain_leaves_no_hooks_and_same_flags(run_and_images, tmp_path):
    from vistrain.workflows.explain import explain_images
    from vistrain.predictor import Classifier
    run, images = run_and_images
    clf = Classifier.from_run(run)
    clf.model.train()  # a model in training mode must come back in training mode
    before = hooks_and_flags(clf.model)
    for method in ("gradcam", "gradcam++", "layercam"):
        explain_images(clf, images[:1], tmp_path, method=method, target="2", feature_maps=True)
    assert hooks_and_flags(clf.model) == before
    assert all(p.grad is None for p in clf.model.parameters())


def test_list_layers_marks_default(run_and_images, capsys):
    run, _ = run_and_images
    assert main(["explain", str(run), "--list-layers"]) == 0
    out = capsys.readouterr().out
    assert "<- default CAM layer" in out and "x" in out


def test_errors_are_one_line_with_the_fix(run_and_images, tmp_path, capsys):
    run, images = run_and_images
    assert main(["explain", str(run), images[0], "--class", "7", "--out", str(tmp_path)]) == 2
    assert "index out of range" in capsys.readouterr().err
    assert main(["explain", str(run), images[0], "--class", "zebra", "--out", str(tmp_path)]) == 2
    assert "no such class" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "nope"), images[0]]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert main(["explain", str(run), str(tmp_path / "missing.png")]) == 2
    assert "image file not found" in capsys.readouterr().err
    assert main(["explain", str(run), images[0], "--layer", "stagez", "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err


def test_resolve_class():
    from vistrain.workflows.explain import resolve_class
    assert resolve_class(None, ["a", "b"]) is None
    assert resolve_class("B", ["a", "b"]) == 1 and resolve_class("0", ["a", "b"]) == 0
    with pytest.raises(VistrainError):
        resolve_class("-1", ["a", "b"])


def test_vit_writes_attention_and_rollout(run_and_images, tmp_path, capsys):
    import timm

    from vistrain.workflows.explain import explain_images
    from vistrain.predictor import Classifier
    _, images = run_and_images
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=32)
    clf = Classifier(vit, ["cat", "dog", "eel"], Preprocess(size=32, mean=(0.5,) * 3, std=(0.5,) * 3))
    before = hooks_and_flags(vit)
    paths = explain_images(clf, images[:1], tmp_path)
    names = sorted(Path(p).name.rsplit("_", 1)[1] for p in paths)
    assert names == ["attention.png", "gradcam.png", "rollout.png"]
    assert hooks_and_flags(vit) == before
