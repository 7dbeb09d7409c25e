"""Crop fast path of the geometric ops (vistrain.transforms.functional.resample).

References: torchvision's ``resized_crop`` (the same torch kernels, so uint8 antialiased results
are expected bit-identical) and vistrain's own ``grid_sample`` warp (bilinear without
antialiasing: the same sampling positions, within 1 grey level for uint8).
"""
from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF

from vistrain.device import Runtime
from vistrain.training.loop import BatchPipeline
from vistrain.transforms import pipeline
from vistrain.transforms.functional import (
    compose_thetas, crop_boxes, crop_resize, crop_resize_dense, crop_theta, flip_theta, from_work,
    rotation_theta, scale_theta, to_work,
)
from vistrain.transforms.functional.geometry import _grid_sample
from vistrain.transforms.normalize import normalize_batch
from vistrain.transforms.ops import (
    ColorJitter, RandomHorizontalFlip, RandomResizedCrop, RandomRotation, RandomVerticalFlip,
    warp_ops,
)
from vistrain.transforms.pipeline import AugmentPipeline
from vistrain.transforms.preprocess import Preprocess

BILINEAR, BICUBIC = TF.InterpolationMode.BILINEAR, TF.InterpolationMode.BICUBIC


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(n=6, h=40, w=52, dtype=torch.uint8, seed=0) -> torch.Tensor:
    x = torch.rand(n, 3, h, w, generator=gen(seed))
    return (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x


def diff(a, b) -> torch.Tensor:
    return (a.double() - b.double()).abs()


def random_boxes(n, h, w, seed=1):
    op = RandomResizedCrop(None, scale=(0.1, 1.0))
    return op.make_params((n, 3, h, w), gen(seed))["box"]


class TestCropBoxes:
    def test_reads_back_crop_and_flip_matrices(self):
        boxes = random_boxes(50, 40, 52)
        hflip, vflip = torch.rand(50, generator=gen(2)) < 0.5, torch.rand(50, generator=gen(3)) < 0.5
        theta = compose_thetas([crop_theta(boxes, (40, 52)), flip_theta(hflip, vflip)])
        got, gh, gv = crop_boxes(theta, (40, 52))
        assert torch.equal(got, boxes.long()) and torch.equal(gh, hflip) and torch.equal(gv, vflip)

    def test_flip_before_crop_mirrors_the_box(self):
        boxes = torch.tensor([[2.0, 3.0, 10.0, 20.0]])
        theta = compose_thetas([flip_theta(torch.tensor([True]), torch.tensor([False])),
                                crop_theta(boxes, (40, 52))])
        got, gh, gv = crop_boxes(theta, (40, 52))
        assert got.tolist() == [[2, 52 - 3 - 20, 10, 20]] and gh.tolist() == [True]

    def test_not_a_crop_is_none(self):
        assert crop_boxes(rotation_theta(torch.tensor([0.0, 10.0]), (40, 52)), (40, 52)) is None
        half_pixel = crop_theta(torch.tensor([[0.5, 0.0, 10.0, 10.0]]), (40, 52))
        assert crop_boxes(half_pixel, (40, 52)) is None
        zoom_out = scale_theta(torch.tensor([0.8]))  # the box reaches outside the image
        assert crop_boxes(zoom_out, (40, 52)) is None


class TestCropResize:
    def test_uint8_antialiased_equals_torchvision(self):
        x = batch()
        boxes = random_boxes(6, 40, 52)
        none = torch.zeros(6, dtype=torch.bool)
        for mode, tv_mode in (("bilinear", BILINEAR), ("bicubic", BICUBIC)):
            y = crop_resize(x, boxes.long(), none, none, (17, 23), mode, antialias=True)
            assert y.dtype == torch.uint8 and y.shape == (6, 3, 17, 23) and y.is_contiguous()
            for i, box in enumerate(boxes.long().tolist()):
                ref = TF.resized_crop(x[i], *box, size=[17, 23], interpolation=tv_mode, antialias=True)
                assert diff(y[i], ref).max() <= 1  # same kernel; layout may move a rounding

    def test_float_equals_torchvision(self):
        x = batch(dtype=torch.float32)
        boxes = random_boxes(6, 40, 52, seed=4)
        none = torch.zeros(6, dtype=torch.bool)
        y = crop_resize(x, boxes.long(), none, none, (30, 30), "bilinear", antialias=True)
        for i, box in enumerate(boxes.long().tolist()):
            ref = TF.resized_crop(x[i], *box, size=[30, 30], interpolation=BILINEAR, antialias=True)
            assert diff(y[i], ref.clamp(0, 1)).max() <= 1e-5

    def test_without_antialias_equals_torchvision_and_grid_sample_inside(self):
        """Crop-then-resize (torchvision) clamps at the box edge where ``grid_sample`` with the
        crop matrix reads the real neighbours outside the box: equal away from the edges."""
        x = batch()
        boxes = random_boxes(6, 40, 52, seed=5)
        flips = torch.tensor([True, False] * 3)
        theta = compose_thetas([crop_theta(boxes, (40, 52)), flip_theta(flips, ~flips)])
        y = crop_resize(x, *crop_boxes(theta, (40, 52)), out_hw=(24, 28), antialias=False)
        for i, box in enumerate(boxes.long().tolist()):
            ref = TF.resized_crop(x[i], *box, size=[24, 28], interpolation=BILINEAR, antialias=False)
            ref = ref.flip(-1) if flips[i] else ref.flip(-2)
            assert diff(y[i], ref).max() <= 1
        warped = from_work(_grid_sample(to_work(x), theta, (24, 28), "border", 0.0,
                                        "bilinear"), torch.uint8)
        assert diff(y, warped)[..., 6:-6, 6:-6].max() <= 1

    def test_uint8_bicubic_without_antialias_goes_through_float(self):
        """torch has no uint8 bicubic kernel without antialiasing: float, rounded, saturated."""
        x = batch()
        boxes = random_boxes(6, 40, 52, seed=6).long()
        none = torch.zeros(6, dtype=torch.bool)
        y = crop_resize(x, boxes, none, none, (60, 60), "bicubic", antialias=False)
        assert y.dtype == torch.uint8
        for i, (top, left, h, w) in enumerate(boxes.tolist()):
            ref = torch.nn.functional.interpolate(x[i:i + 1, :, top:top + h, left:left + w].double(),
                                                  size=(60, 60), mode="bicubic")
            assert diff(y[i], ref[0].round().clamp(0, 255)).max() <= 1

    def test_antialias_removes_aliasing_when_shrinking(self):
        """1-pixel stripes shrunk 3x: antialiased output is near the mean grey, aliased is not."""
        stripes = (torch.arange(48) % 2 * 255).to(torch.uint8).view(1, 1, 1, 48).expand(4, 3, 48, 48)
        op = RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
        params = op.make_params(stripes, gen(0))
        smooth = op.apply(stripes.contiguous(), params)
        aliased = RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                                    antialias=False).apply(stripes.contiguous(), params)
        assert diff(smooth, torch.full_like(smooth, 127.5)).max() < 45
        assert diff(aliased, torch.full_like(aliased, 127.5)).max() > 100


class TestPipelineOrder:
    def ops(self, size):
        return [RandomResizedCrop(size, scale=(0.3, 1.0)), RandomHorizontalFlip(),
                ColorJitter(0.2, 0.3, 0.3, 0.05)]

    def test_enlarging_crop_takes_colour_first(self):
        """16 px -> 48 px: the colour op runs on the 16 px source (9x fewer pixels)."""
        x = batch(h=16, w=16)
        pipe = AugmentPipeline(self.ops(48))
        params = pipe.make_params(x, gen(7))
        colour_first = from_work(pipe.ops[2].apply_float(to_work(x), params[2]), torch.uint8)
        ref = warp_ops(colour_first, pipe.ops[:2], params[:2])
        assert torch.equal(pipe.apply(x, params), ref)

    def test_shrinking_crop_takes_colour_after(self):
        x = batch(h=64, w=64)
        pipe = AugmentPipeline(self.ops(24))
        params = pipe.make_params(x, gen(8))
        cropped = warp_ops(x, pipe.ops[:2], params[:2])
        assert cropped.dtype == torch.uint8  # the crop fast path kept uint8
        ref = from_work(pipe.ops[2].apply_float(to_work(cropped), params[2]), torch.uint8)
        assert torch.equal(pipe.apply(x, params), ref)


class TestApplyNormalized:
    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def two_step(self, pipe, x, params):
        return normalize_batch(pipe.apply(x, params), 1 / 255, self.MEAN, self.STD)

    def test_dense_matrices_equal_interpolate(self):
        x = batch(5, 32, 32, dtype=torch.float32)
        boxes = torch.tensor([[0, 0, 32, 32], [3, 4, 20, 25], [10, 0, 12, 9], [0, 5, 27, 27], [1, 1, 31, 30]])
        hf, vf = torch.tensor([0, 1, 0, 1, 0]).bool(), torch.tensor([0, 0, 1, 1, 0]).bool()
        for mode, out_hw in [("bilinear", (64, 56)), ("bicubic", (64, 56)), ("bilinear", (48, 48)),
                             ("bicubic", (40, 40))]:  # square: both axes' matrices in one call
            y = crop_resize_dense(x, boxes, hf, vf, out_hw, mode)
            for i, (t, l, h, w) in enumerate(boxes.tolist()):
                ref = torch.nn.functional.interpolate(x[i:i + 1, :, t:t + h, l:l + w], size=out_hw,
                                                      mode=mode)[0]
                ref = ref.flip(-1) if hf[i] else ref
                ref = ref.flip(-2) if vf[i] else ref
                assert diff(y[i], ref).max() <= 1e-5

    def test_enlarging_crop_is_resampled_after_normalizing(self, monkeypatch):
        calls = []
        real = crop_resize_dense
        monkeypatch.setattr(pipeline, "crop_resize_dense", lambda *a, **k: calls.append(1) or real(*a, **k))
        x = batch(6, 16, 16)
        pipe = AugmentPipeline([RandomResizedCrop(48, scale=(0.3, 1.0)), RandomHorizontalFlip(),
                                ColorJitter(0.2, 0.3, 0.3, 0.05)])
        params = pipe.make_params(x, gen(9))
        y = pipe.apply_normalized(x, params, 1 / 255, self.MEAN, self.STD)
        assert calls and y.dtype == torch.float32 and y.shape == (6, 3, 48, 48)
        # the two-step result rounds to uint8 twice (after the colour, after the crop) and uses
        # the fixed-point weights of torch's uint8 kernel: measured max 1.28 grey levels
        levels = diff(y, self.two_step(pipe, x, params)) * torch.tensor(self.STD).view(3, 1, 1) * 255
        assert levels.max() <= 1.5 and 0 < levels.mean() < 0.5

    def test_other_pipelines_equal_the_two_steps(self, monkeypatch):
        monkeypatch.setattr(pipeline, "crop_resize_dense", None)  # must not be reached
        x = batch(6, 64, 64)
        for ops in ([RandomResizedCrop(24), RandomHorizontalFlip(), ColorJitter(0.2, 0.2)],
                    [RandomResizedCrop(96), RandomRotation(10)],  # not a crop: grid_sample
                    [RandomHorizontalFlip()], []):
            pipe = AugmentPipeline(ops)
            params = pipe.make_params(x, gen(10))
            assert torch.equal(pipe.apply_normalized(x, params, 1 / 255, self.MEAN, self.STD),
                               self.two_step(pipe, x, params))

    def test_float_input_is_on_the_unit_scale(self):
        x = batch(4, 16, 16, dtype=torch.float32)
        pipe = AugmentPipeline([RandomResizedCrop(40), RandomVerticalFlip()])
        params = pipe.make_params(x, gen(11))
        ref = normalize_batch(pipe.apply(x, params) * 255, 1 / 255, self.MEAN, self.STD)
        assert diff(pipe.apply_normalized(x, params, 1 / 255, self.MEAN, self.STD), ref).max() <= 1e-4

    def test_training_batches_take_the_one_call(self):
        pre = Preprocess(size=48, mean=self.MEAN, std=self.STD)
        pipe = AugmentPipeline([RandomResizedCrop(48, scale=(0.5, 1.0)), RandomHorizontalFlip()])
        x, y = batch(4, 16, 16), torch.tensor([0, 1, 0, 1])
        torch.manual_seed(3)
        got, _, _ = BatchPipeline(normalize=pre.normalize, augment=pipe)(x, y, Runtime.create("cpu"), True)
        torch.manual_seed(3)
        ref = pre.normalize(pipe(x))  # same global-RNG draws
        assert got.shape == ref.shape == (4, 3, 48, 48)
        assert 0 < (diff(got, ref) * torch.tensor(self.STD).view(3, 1, 1) * 255).max() <= 1.0
        evaluated, _, _ = BatchPipeline(normalize=pre.normalize, augment=pipe)(x, y, Runtime.create("cpu"), False)
        assert torch.equal(evaluated, pre.normalize(x))  # no augmentation outside training
