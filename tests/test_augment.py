"""Batch augmentations: shared checkers + one class per operation.

Tolerances (stated once, used throughout):
* pointwise ops vs a reference: max 1 grey level for uint8 (we round, torchvision truncates),
  1e-5 for float batches;
* resampling ops vs torchvision: mean abs difference < 1.5 grey levels (uint8);
* identity at zero strength: exact (identity/flip matrices skip ``grid_sample``); forced through
  ``grid_sample`` the identity is within 1 grey level;
* batch vs one-sample-at-a-time with that sample's params: 1e-6 for float; for uint8 at most
  1 grey level and a mean below 1e-3 (a per-image mean summed in another order can land on the
  other side of a rounding boundary: 7 of 9.6M values at 64 x 224 x 224; exact at test sizes).
* ``ColorJitter(fused=True)`` (one colour matrix): equals the sequential kernels within 1e-5 where
  no step clips; its grey-axis hue rotation is compared with torchvision's HSV hue by direction and
  size of change (not pixel for pixel: a different hue model by design); the crop fast path is
  tested against torchvision in ``test_resample.py``.
The CUDA case is skipped when ``torch.cuda.is_available()`` is false (CI has no GPU).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from vistrain.config import AugmentConfig
from vistrain.errors import VistrainError
from vistrain.transforms.functional import (
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, affine_grid, box_mask,
    colour_affine, colour_float, compose_thetas, crop_theta, from_work, grayscale, hsv_to_rgb,
    hue_matrix, rgb_to_hsv, rotation_theta, soft_targets, to_work, warp,
)
from vistrain.transforms.functional.geometry import _grid_sample
from vistrain.transforms.losses import SoftTargetCrossEntropy, mixed_cross_entropy
from vistrain.transforms.ops import (
    BatchMix, ColorJitter, CutMix, GaussianNoise, MixUp, RandAugment, RandomBrightness,
    RandomContrast, RandomErasing, RandomHorizontalFlip, RandomHue, RandomResizedCrop,
    RandomRotation, RandomSaturation, RandomScale, RandomTranslate, RandomVerticalFlip,
    TrivialAugment, slice_params,
)
from vistrain.transforms.ops.policies import OPS
from vistrain.transforms.pipeline import AugmentPipeline
from vistrain.transforms.presets import PRESETS, build_augmentation, describe

BILINEAR = TF.InterpolationMode.BILINEAR


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_batch(n=6, c=3, h=24, w=32, dtype=torch.uint8, seed=0, cell=4) -> torch.Tensor:
    """Smooth random images (noise upsampled from ``cell``-pixel cells): resampling comparisons
    then measure geometry, not aliasing of single-pixel noise."""
    low = torch.rand(n, c, h // cell + 1, w // cell + 1, generator=gen(seed))
    x = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    return (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def mean_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().mean().item()


# -- shared checkers -------------------------------------------------------------------------

def check_output(op, x):
    y = op(x, generator=gen(1))
    assert y.shape == op.output_shape(x.shape)
    assert y.dtype == x.dtype
    if x.is_floating_point():
        assert 0.0 <= y.min().item() and y.max().item() <= 1.0
    return y


def check_determinism(op, x):
    y1, y2 = op(x, generator=gen(3)), op(x, generator=gen(3))
    assert torch.equal(y1, y2), "same seed must give the same output"
    params = op.make_params(x, gen(3))
    assert torch.equal(op.apply(x, params), y1), "replaying params must give the same output"
    assert torch.equal(op.apply(x, params), op.apply(x, params))


def check_per_sample(op, x):
    """The batch result equals applying the op to each sample alone with that sample's params."""
    params = op.make_params(x, gen(5))
    y = op.apply(x, params)
    tol = 1.0 if x.dtype == torch.uint8 else 1e-6
    alone = torch.cat([op.apply(x[i:i + 1], slice_params(params, slice(i, i + 1)))
                       for i in range(len(x))])
    assert max_diff(alone, y) <= tol, "a sample's result depends on its batch"
    assert mean_diff(alone, y) <= 1e-3


def check_varies(values: torch.Tensor):
    """Different samples get different parameters."""
    assert len(torch.unique(values.reshape(len(values), -1), dim=0)) > 1


def check_common(op, n=6, h=24, w=32):
    for dtype in (torch.uint8, torch.float32):
        x = make_batch(n, h=h, w=w, dtype=dtype)
        check_output(op, x)
        check_determinism(op, x)
        check_per_sample(op, x)


def check_identity(op, x):
    assert torch.equal(op(x, generator=gen(0)), x)


# -- geometric ops ---------------------------------------------------------------------------

class TestRandomHorizontalFlip:
    def test_common(self):
        check_common(RandomHorizontalFlip(0.5))

    def test_matches_torchvision_exactly(self):
        x = make_batch(8)
        op = RandomHorizontalFlip(0.5)
        params = op.make_params(x, gen(2))
        check_varies(params["flip"])
        y = op.apply(x, params)
        for i, flip in enumerate(params["flip"].tolist()):
            assert torch.equal(y[i], TF.horizontal_flip(x[i]) if flip else x[i])

    def test_p0_is_identity(self):
        check_identity(RandomHorizontalFlip(0.0), make_batch())


class TestRandomVerticalFlip:
    def test_common(self):
        check_common(RandomVerticalFlip(0.5))

    def test_matches_torchvision_exactly(self):
        x = make_batch(8)
        op = RandomVerticalFlip(0.5)
        params = op.make_params(x, gen(2))
        y = op.apply(x, params)
        for i, flip in enumerate(params["flip"].tolist()):
            assert torch.equal(y[i], TF.vertical_flip(x[i]) if flip else x[i])


class TestRandomRotation:
    def test_common(self):
        check_common(RandomRotation(30, p=0.7))

    def test_zero_strength_is_identity(self):
        check_identity(RandomRotation(0), make_batch())
        check_identity(RandomRotation(30, p=0.0), make_batch())

    def test_identity_through_grid_sample_within_one_level(self):
        x = make_batch()
        y = from_work(_grid_sample(to_work(x), torch.eye(3).repeat(len(x), 1, 1),
                                   (24, 32), "fill", 0.0, "bilinear"), torch.uint8)
        assert max_diff(x, y) <= 1

    @pytest.mark.parametrize("fill", [0.0, 0.5])
    def test_matches_torchvision(self, fill):
        x = make_batch(4)
        op = RandomRotation(40, fill=fill)
        params = op.make_params(x, gen(4))
        check_varies(params["angle"])
        y = op.apply(x, params)
        for i, angle in enumerate(params["angle"].tolist()):
            ref = TF.rotate(x[i], angle, interpolation=BILINEAR,
                            fill=[fill * 255] if fill else None)
            assert mean_diff(y[i], ref) < 1.5

    def test_non_square_rotation_is_rigid(self):
        """90 degrees on a square image is an exact transpose-flip (torch.rot90)."""
        x = make_batch(2, h=16, w=16)
        y = warp(x, rotation_theta(torch.tensor([90.0, 90.0]), (16, 16)))
        assert max_diff(y, torch.rot90(x, 1, dims=(2, 3))) <= 1


class TestRandomTranslate:
    def test_common(self):
        check_common(RandomTranslate(0.2, p=0.8))
        check_common(RandomTranslate(0.2, padding="reflect"))

    def test_zero_shift_is_identity(self):
        check_identity(RandomTranslate(0.0), make_batch())

    @pytest.mark.parametrize("padding", ["fill", "reflect"])
    def test_matches_numpy_pad_and_crop(self, padding):
        x = make_batch(5)
        op = RandomTranslate(0.25, padding=padding)
        params = op.make_params(x, gen(6))
        check_varies(params["shift"])
        y = op.apply(x, params)
        for i, (dx, dy) in enumerate(params["shift"].long().tolist()):
            a = x[i].numpy()
            pad = ((0, 0), (abs(dy), abs(dy)), (abs(dx), abs(dx)))
            padded = np.pad(a, pad, mode="constant" if padding == "fill" else "symmetric")
            top, left = abs(dy) - dy, abs(dx) - dx
            ref = padded[:, top:top + 24, left:left + 32]
            assert max_diff(y[i], torch.from_numpy(ref)) <= 1


class TestRandomScale:
    def test_common(self):
        check_common(RandomScale((0.7, 1.4), p=0.8))

    def test_unit_scale_is_identity(self):
        check_identity(RandomScale((1.0, 1.0)), make_batch())

    def test_matches_torchvision_affine(self):
        x = make_batch(4)
        op = RandomScale((0.6, 1.5))
        params = op.make_params(x, gen(7))
        y = op.apply(x, params)
        for i, s in enumerate(params["scale"].tolist()):
            ref = TF.affine(x[i], angle=0.0, translate=[0, 0], scale=s, shear=[0.0, 0.0],
                            interpolation=BILINEAR)
            assert mean_diff(y[i], ref) < 1.5


class TestRandomResizedCrop:
    def test_common(self):
        check_common(RandomResizedCrop(20, scale=(0.2, 1.0)))
        check_common(RandomResizedCrop(None))

    def test_boxes_are_valid_and_vary(self):
        op = RandomResizedCrop(16, scale=(0.3, 0.9), ratio=(0.5, 2.0))
        boxes = op.make_params((200, 3, 24, 32), gen(8))["box"]
        top, left, bh, bw = boxes.unbind(1)
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + bh <= 24).all() and (left + bw <= 32).all()
        area = bh * bw / (24 * 32)  # rounding to whole pixels moves the area a little
        assert area.min() > 0.3 - 0.05 and area.max() < 0.9 + 0.05
        check_varies(boxes)

    def test_fallback_is_torchvision_centre_crop(self):
        """Aspect 4-5 cannot fit a 24x32 image: torchvision falls back to a centred crop."""
        op = RandomResizedCrop(8, scale=(0.5, 1.0), ratio=(4.0, 5.0))
        boxes = op.make_params((3, 3, 24, 32), gen(0))["box"]
        assert boxes.tolist() == [[8.0, 0.0, 8.0, 32.0]] * 3

    def test_matches_torchvision_resized_crop(self):
        x = make_batch(4)
        op = RandomResizedCrop((28, 36), scale=(0.2, 1.0))
        params = op.make_params(x, gen(9))
        y = op.apply(x, params)
        assert y.shape == (4, 3, 28, 36)
        for i, box in enumerate(params["box"].long().tolist()):
            ref = TF.resized_crop(x[i], *box, size=[28, 36], interpolation=BILINEAR,
                                  antialias=False)
            assert mean_diff(y[i], ref) < 1.5


# -- photometric and occlusion ops -----------------------------------------------------------

def luma_np(a: np.ndarray) -> np.ndarray:
    return 0.2989 * a[0] + 0.587 * a[1] + 0.114 * a[2]


class TestRandomBrightness:
    def test_common(self):
        check_common(RandomBrightness(0.3, p=0.7))

    def test_zero_is_identity(self):
        check_identity(RandomBrightness(0.0), make_batch())

    def test_matches_numpy_additive_reference(self):
        # torchvision's brightness is multiplicative, ours additive: compare with NumPy instead
        x = make_batch(6)
        op = RandomBrightness(0.4)
        params = op.make_params(x, gen(10))
        check_varies(params["delta"])
        y = op.apply(x, params)
        ref = np.clip(np.round(x.numpy() + 255.0 * params["delta"].numpy()[:, None, None, None]),
                      0, 255)
        assert max_diff(y, torch.from_numpy(ref)) <= 1


class TestRandomContrast:
    def test_common(self):
        check_common(RandomContrast(0.5, p=0.7))

    def test_factor_one_is_identity(self):
        check_identity(RandomContrast(0.0), make_batch())

    def test_float_matches_torchvision(self):
        x = make_batch(4, dtype=torch.float32)
        params = RandomContrast(0.6).make_params(x, gen(11))
        y = RandomContrast(0.6).apply(x, params)
        for i, f in enumerate(params["factor"].tolist()):
            assert max_diff(y[i], TF.adjust_contrast(x[i], f)) <= 1e-5

    def test_uint8_matches_numpy(self):
        x = make_batch(4)
        factor = torch.tensor([0.0, 0.5, 1.3, 2.0])
        y = adjust_contrast(x, factor)
        for i, f in enumerate(factor.tolist()):
            a = x[i].numpy().astype(np.float64)
            ref = np.clip(np.round(f * a + (1 - f) * luma_np(a).mean()), 0, 255)
            assert max_diff(y[i], torch.from_numpy(ref)) <= 1


class TestRandomSaturation:
    def test_common(self):
        check_common(RandomSaturation(0.5, p=0.7))

    def test_factor_one_and_gray_images_are_identity(self):
        check_identity(RandomSaturation(0.0), make_batch())
        check_identity(RandomSaturation(0.9), make_batch(c=1))

    def test_float_matches_torchvision(self):
        x = make_batch(4, dtype=torch.float32)
        factor = torch.tensor([0.0, 0.4, 1.0, 1.8])
        y = adjust_saturation(x, factor)
        for i, f in enumerate(factor.tolist()):
            assert max_diff(y[i], TF.adjust_saturation(x[i], f)) <= 1e-5

    def test_uint8_matches_numpy(self):
        x = make_batch(4)
        factor = torch.tensor([0.0, 0.4, 1.0, 1.8])
        y = adjust_saturation(x, factor)
        for i, f in enumerate(factor.tolist()):
            a = x[i].numpy().astype(np.float64)
            ref = np.clip(np.round(f * a + (1 - f) * luma_np(a)), 0, 255)
            assert max_diff(y[i], torch.from_numpy(ref)) <= 1


class TestRandomHue:
    def test_common(self):
        check_common(RandomHue(0.3, p=0.7))

    def test_zero_and_gray_images_are_identity(self):
        check_identity(RandomHue(0.0), make_batch())
        check_identity(RandomHue(0.4), make_batch(c=1))

    @pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
    def test_matches_torchvision(self, dtype):
        x = make_batch(5, dtype=dtype)
        shift = torch.tensor([-0.5, -0.2, 0.05, 0.3, 0.5])
        y = adjust_hue(x, shift)
        for i, s in enumerate(shift.tolist()):
            ref = TF.adjust_hue(x[i], s)
            assert max_diff(y[i], ref) <= (1e-5 if dtype == torch.float32 else 1)

    def test_hsv_round_trip(self):
        x = make_batch(3, dtype=torch.float32)
        assert max_diff(hsv_to_rgb(rgb_to_hsv(x)), x) <= 1e-5


class TestColorJitter:
    def test_common(self):
        check_common(jitter := ColorJitter(0.2, 0.3, 0.3, 0.05, p=0.8))
        assert "hue" in jitter.describe()

    def test_zero_is_identity(self):
        check_identity(ColorJitter(), make_batch())
        check_identity(ColorJitter(0.3, 0.3, 0.3, 0.1, p=0.0), make_batch())

    def test_sequential_equals_the_kernels_in_order(self):
        x = make_batch(4, dtype=torch.float32)
        op = ColorJitter(0.2, 0.3, 0.3, 0.05, fused=False)
        p = op.make_params(x, gen(12))
        ref = adjust_hue(adjust_saturation(adjust_contrast(
            adjust_brightness(x, p["brightness"]), p["contrast"]), p["saturation"]), p["hue"])
        assert max_diff(op.apply(x, p), ref) <= 1e-6
        assert "sequential" in op.describe()

    def test_fused_equals_the_kernels_where_nothing_clips(self):
        """Without hue, the one colour matrix is exactly brightness -> contrast -> saturation
        whenever no intermediate step clips (mid-range images, moderate strengths)."""
        x = make_batch(6, dtype=torch.float32) * 0.5 + 0.25
        op = ColorJitter(0.05, 0.2, 0.2)
        p = op.make_params(x, gen(13))
        ref = adjust_saturation(adjust_contrast(adjust_brightness(x, p["brightness"]),
                                                p["contrast"]), p["saturation"])
        assert 0.0 < ref.min() and ref.max() < 1.0  # the premise: nothing clipped
        assert max_diff(op.apply(x, p), ref) <= 1e-5
        assert "one colour matrix" in op.describe()

    def test_fused_clamps_once_at_the_end(self):
        """Grey pixels 0.95 and 0.5, brightness +0.2 then contrast 0.5: step by step the 0.95
        pixel clips to 1.0 first (mean 0.85 -> 0.925, 0.775); the matrix keeps 1.15 until the end
        (mean 0.925 -> 1.0375 clamped to 1.0, and 0.8125)."""
        x = torch.tensor([0.95, 0.5]).view(1, 1, 1, 2).expand(1, 3, 1, 2).contiguous()
        p = {"brightness": torch.tensor([0.2]), "contrast": torch.tensor([0.5]),
             "saturation": torch.tensor([1.0]), "hue": torch.tensor([0.0])}
        fused = ColorJitter(0.2, 0.5).apply(x, p)[0, :, 0]
        steps = ColorJitter(0.2, 0.5, fused=False).apply(x, p)[0, :, 0]
        assert max_diff(fused, torch.tensor([1.0, 0.8125]).expand(3, 2)) <= 1e-3
        assert max_diff(steps, torch.tensor([0.925, 0.775]).expand(3, 2)) <= 1e-3

    def test_hue_matrix_keeps_grey_and_mean_and_turns_like_hsv(self):
        grey = torch.full((2, 3, 4, 4), 0.4)
        shift = torch.tensor([0.1, -0.3])
        zero, one = torch.zeros(2), torch.ones(2)
        assert max_diff(colour_float(grey, zero, one, one, shift), grey) <= 1e-6
        x = make_batch(8, dtype=torch.float32) * 0.6 + 0.2
        s = torch.full((8,), 0.02)
        y = colour_float(x, torch.zeros(8), torch.ones(8), torch.ones(8), s)
        assert max_diff(y.mean(1), x.mean(1)) <= 1e-5  # (r + g + b) / 3 is kept
        hsv, hsv_back, change = adjust_hue(x, s), adjust_hue(x, -s), mean_diff(x, adjust_hue(x, s))
        # measured: 0.0100 to HSV's own result, 0.0232 to HSV turned the other way, change 0.0105
        assert mean_diff(y, hsv) < 0.5 * mean_diff(y, hsv_back)
        assert 0.5 * change < mean_diff(y, x) < 2.0 * change
        red = torch.tensor([0.8, 0.2, 0.2]).view(1, 3, 1, 1)
        turned = colour_float(red, torch.zeros(1), torch.ones(1), torch.ones(1),
                              torch.tensor([0.05])).flatten()
        assert turned[1] > 0.25 and turned[0] > turned[1] > turned[2]  # red -> towards yellow
        assert torch.equal(hue_matrix(torch.zeros(3)), torch.eye(3, dtype=torch.float64).expand(3, 3, 3))

    def test_fused_matches_numpy_colour_matrix(self):
        x = make_batch(3, dtype=torch.float32)
        op = ColorJitter(0.2, 0.3, 0.3, 0.05)
        p = op.make_params(x, gen(14))
        a, b = colour_affine(p["brightness"], p["contrast"], p["saturation"], p["hue"],
                             grayscale(x.mean(dim=(2, 3), keepdim=True)).view(3))
        ref = np.clip(np.einsum("nij,njhw->nihw", a.numpy(), x.double().numpy())
                      + b.numpy()[:, :, None, None], 0, 1)
        assert max_diff(op.apply(x, p), torch.from_numpy(ref)) <= 1e-5


class TestGaussianNoise:
    def test_common(self):
        check_common(GaussianNoise((0.01, 0.1), p=0.7))

    def test_zero_sigma_is_identity(self):
        check_identity(GaussianNoise((0.0, 0.0), p=1.0), make_batch())

    def test_noise_statistics_and_independence(self):
        x = torch.full((4, 3, 64, 64), 0.5)
        op = GaussianNoise((0.05, 0.05), p=1.0)
        noise = op(x, generator=gen(13)) - x
        assert abs(noise.std().item() - 0.05) < 0.005 and abs(noise.mean().item()) < 0.005
        assert max_diff(noise[0], noise[1]) > 0.01  # each sample has its own noise


class TestRandomErasing:
    def test_common(self):
        check_common(RandomErasing(p=0.7))
        check_common(RandomErasing(p=0.7, value="random"))

    def test_p0_is_identity(self):
        check_identity(RandomErasing(p=0.0), make_batch())

    @pytest.mark.parametrize("value", [0.0, 0.5])
    def test_matches_torchvision_erase(self, value):
        x = make_batch(6)
        op = RandomErasing(p=1.0, value=value, scale=(0.05, 0.3))
        params = op.make_params(x, gen(14))
        check_varies(params["box"])
        y = op.apply(x, params)
        for i, (t, l, h, w) in enumerate(params["box"].long().tolist()):
            v = torch.tensor(round(value * 255), dtype=torch.uint8)
            assert torch.equal(y[i], TF.erase(x[i], t, l, h, w, v))

    def test_random_value_only_touches_the_box(self):
        x = make_batch(4)
        op = RandomErasing(p=1.0, value="random")
        params = op.make_params(x, gen(15))
        y = op.apply(x, params)
        mask = box_mask(params["box"], (24, 32), x.device).expand_as(x)
        assert torch.equal(y[~mask], x[~mask]) and not torch.equal(y[mask], x[mask])


# -- the fused pipeline ----------------------------------------------------------------------

class TestAugmentPipeline:
    def ops(self):
        return [RandomResizedCrop(20, scale=(0.3, 1.0)), RandomHorizontalFlip(),
                RandomRotation(20, fill=0.25), RandomTranslate(0.1, padding="reflect"),
                ColorJitter(0.2, 0.2, 0.2, 0.05), GaussianNoise((0.0, 0.05)),
                RandomErasing(p=0.5)]

    def test_common(self):
        check_common(AugmentPipeline(self.ops()))

    def test_empty_pipeline_returns_input(self):
        x = make_batch()
        assert AugmentPipeline([])(x, generator=gen()) is x

    def test_runs_split_on_padding(self):
        pipe = AugmentPipeline(self.ops())
        assert pipe._run_end(0) == 3  # crop + flip + rotation(fill) fuse; reflect starts anew
        assert pipe._run_end(3) == 4
        assert AugmentPipeline(self.ops(), fuse=False)._run_end(0) == 1

    def test_params_follow_size_changes(self):
        pipe = AugmentPipeline([RandomResizedCrop(12), RandomErasing(p=1.0)])
        params = pipe.make_params(make_batch(), gen(16))
        box = params[1]["box"]
        assert (box[:, 0] + box[:, 2] <= 12).all() and (box[:, 1] + box[:, 3] <= 12).all()

    def test_fused_crop_and_flip_equals_sequential(self):
        ops = [RandomResizedCrop(20, scale=(0.3, 1.0)), RandomHorizontalFlip(),
               RandomVerticalFlip()]
        x = make_batch(8)
        params = AugmentPipeline(ops).make_params(x, gen(17))
        fused = AugmentPipeline(ops).apply(x, params)
        assert max_diff(fused, AugmentPipeline(ops, fuse=False).apply(x, params)) <= 1

    def test_fused_rotations_add_up(self):
        x = make_batch(4, h=20, w=36, dtype=torch.float32)
        pipe = AugmentPipeline([RandomRotation(30), RandomRotation(30)])
        params = pipe.make_params(x, gen(18))
        total = params[0]["angle"] + params[1]["angle"]
        ref = warp(x, rotation_theta(total, (20, 36)))
        assert max_diff(pipe.apply(x, params), ref) <= 1e-5

    def test_fused_crop_then_rotation_keeps_the_order(self):
        """Away from the corners (where fusion shows real pixels instead of fill) the fused warp
        equals crop-then-rotate done as two resamples, on a non-square image."""
        ops = [RandomResizedCrop((24, 40), scale=(0.5, 1.0)), RandomRotation(25)]
        x = make_batch(6, h=30, w=44, cell=8)  # smooth: two resamples blur little more than one
        params = AugmentPipeline(ops).make_params(x, gen(19))
        fused = AugmentPipeline(ops).apply(x, params)
        seq = AugmentPipeline(ops, fuse=False).apply(x, params)
        centre = (..., slice(6, 18), slice(10, 30))
        assert mean_diff(fused[centre], seq[centre]) < 1.5
        wrong_order = warp(x, compose_thetas([rotation_theta(params[1]["angle"], (30, 44)),
                                              crop_theta(params[0]["box"], (30, 44))]),
                           (24, 40))
        assert mean_diff(wrong_order[centre], seq[centre]) > 3.0  # the check can tell

    def test_analytic_grid_equals_affine_grid(self):
        boxes = torch.tensor([[2.0, 3.0, 10.0, 20.0]] * 2)
        theta = compose_thetas([rotation_theta(torch.tensor([17.0, -40.0]), (20, 36)),
                                crop_theta(boxes, (20, 36))])
        ref = F.affine_grid(theta[:, :2], [2, 3, 12, 16], align_corners=False)
        assert max_diff(affine_grid(theta, (12, 16)), ref) <= 1e-6

    def test_rejects_bad_input(self):
        with pytest.raises(VistrainError, match="unsqueeze"):
            RandomHorizontalFlip()(torch.zeros(3, 8, 8, dtype=torch.uint8))
        with pytest.raises(VistrainError, match="uint8 or floating"):
            RandomBrightness()(torch.zeros(1, 3, 8, 8, dtype=torch.int32))
        with pytest.raises(VistrainError, match="probability"):
            RandomRotation(10, p=2.0)

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (skipped: no GPU)")
    def test_cuda_matches_cpu(self):
        ops = [op for op in self.ops() if not isinstance(op, GaussianNoise)]  # noise RNG differs
        pipe = AugmentPipeline(ops)
        x = make_batch(8)
        params = pipe.make_params(x, gen(20))  # CPU params drive both devices
        y_cuda = pipe.apply(x.cuda(), params)
        assert y_cuda.is_cuda and y_cuda.dtype == torch.uint8
        assert mean_diff(y_cuda.cpu(), pipe.apply(x, params)) < 0.05
        assert max_diff(y_cuda.cpu(), pipe.apply(x, params)) <= 1


# -- mixup / cutmix ---------------------------------------------------------------------------

def constant_batch(n=6, h=16, w=20) -> torch.Tensor:
    """Sample i is the constant 10 * (i + 1): every pixel tells which sample it came from."""
    return (torch.arange(1, n + 1, dtype=torch.float32) * 10).view(n, 1, 1, 1).expand(n, 3, h, w) \
        .to(torch.uint8).contiguous()


class TestMix:
    y = torch.tensor([0, 1, 2, 3, 4, 0])

    def test_label_mass_sums_to_one_and_partners_differ(self):
        for mix in (MixUp(5, 0.4), CutMix(5, 1.0), BatchMix(5, 0.4, 1.0, label_smoothing=0.1)):
            params = mix.make_params(constant_batch(), gen(21))
            assert (params["partner"] != torch.arange(6)).all()
            xm, target = mix.apply(constant_batch(), self.y, params)
            assert xm.dtype == torch.uint8 and target.shape == (6, 5)
            assert torch.allclose(target.sum(1), torch.ones(6), atol=1e-6)
            assert (target >= 0).all()

    def test_cutmix_weight_equals_pasted_area(self):
        x = constant_batch()
        mix = CutMix(5, 1.0)
        params = mix.make_params(x, gen(22))
        xm, target = mix.apply(x, self.y, params)
        for i in range(6):
            j = int(params["partner"][i])
            pasted = (xm[i, 0] == x[j, 0, 0, 0]).double().mean().item()
            assert abs(pasted - (1 - params["lam"][i].item())) < 1e-6
            onehot = soft_targets(self.y, 5)
            expected = onehot[i] * (1 - pasted) + onehot[j] * pasted
            assert torch.allclose(target[i], expected.float(), atol=1e-6)

    def test_mixup_is_the_convex_combination(self):
        x = make_batch(6, dtype=torch.float32)
        mix = MixUp(5, 0.4)
        params = mix.make_params(x, gen(23))
        check_varies(params["lam"])
        xm, _ = mix.apply(x, self.y, params)
        lam = params["lam"].view(-1, 1, 1, 1)
        assert max_diff(xm, lam * x + (1 - lam) * x[params["partner"]]) <= 1e-6

    def test_switch_probability_and_determinism(self):
        x = constant_batch(64)
        y = torch.arange(64) % 5
        assert BatchMix(5, 0.4, 1.0, switch_prob=1.0).make_params(x, gen(1))["cutmix"].all()
        assert not BatchMix(5, 0.4, 1.0, switch_prob=0.0).make_params(x, gen(1))["cutmix"].any()
        both = BatchMix(5, 0.4, 1.0, switch_prob=0.5)
        assert 0 < both.make_params(x, gen(1))["cutmix"].sum() < 64
        a, b = both(x, y, generator=gen(4)), both(x, y, generator=gen(4))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])

    def test_loss_equals_hand_mixed_cross_entropy(self):
        x = make_batch(6, dtype=torch.float32)
        mix = BatchMix(5, 0.4, 1.0)
        params = mix.make_params(x, gen(24))
        _, target = mix.apply(x, self.y, params)
        logits = torch.randn(6, 5, generator=gen(25), dtype=torch.float64)
        lam = params["lam"].double()
        y_b = self.y[params["partner"]]
        logp = torch.log_softmax(logits, 1)
        by_hand = (-(lam * logp[torch.arange(6), self.y] + (1 - lam) * logp[torch.arange(6), y_b])
                   ).mean()
        assert abs(SoftTargetCrossEntropy()(logits, target).item() - by_hand.item()) < 1e-6
        assert abs(mixed_cross_entropy(logits, self.y, y_b, lam).item() - by_hand.item()) < 1e-6
        assert abs(SoftTargetCrossEntropy()(logits, self.y).item()
                   - F.cross_entropy(logits, self.y).item()) < 1e-12

    def test_training_loss_of_soft_targets_is_torch_cross_entropy_with_probabilities(self):
        """The training loop's loss on mixed targets is soft_target_cross_entropy: the same
        numbers, bit for bit, as the formula it replaced, and F.cross_entropy's with
        probability targets (float32 and half logits, as under AMP)."""
        from vistrain.training.loop import BatchPipeline
        target = torch.softmax(torch.randn(16, 5, generator=gen(30)), 1)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            logits = torch.randn(16, 5, generator=gen(31)).to(dtype)
            loss = BatchPipeline().loss(logits, target)
            formula = torch.sum(-target * F.log_softmax(logits.float(), dim=1), dim=1).mean()
            assert loss.dtype == torch.float32 and torch.equal(loss, formula)
            assert torch.allclose(loss, F.cross_entropy(logits.float(), target), rtol=1e-6, atol=0)
            smoothed = BatchPipeline(label_smoothing=0.1).loss(logits, target)
            assert torch.allclose(smoothed, F.cross_entropy(logits.float(), target * 0.9 + 0.1 / 5),
                                  rtol=1e-6, atol=0)

    def test_rejects_no_mixing(self):
        with pytest.raises(VistrainError, match="alpha"):
            BatchMix(5)


# -- policies ---------------------------------------------------------------------------------

class TestRandAugment:
    def test_common(self):
        check_common(RandAugment(num_ops=2, magnitude=9))

    def test_per_sample_op_choice(self):
        params = RandAugment(num_ops=3).make_params((32, 3, 8, 8), gen(26))
        assert params["op"].shape == (32, 3)
        check_varies(params["op"])

    def test_magnitude_zero_is_identity(self):
        ops = [o for o in OPS if o not in ("AutoContrast", "Equalize")]  # they have no magnitude
        op = RandAugment(num_ops=3, magnitude=0, ops=ops)
        for dtype in (torch.uint8, torch.float32):
            x = make_batch(16, dtype=dtype)
            assert max_diff(op(x, generator=gen(27)), x) <= (0 if dtype == torch.uint8 else 1e-6)

    @pytest.mark.parametrize("name", [o for o in OPS if o != "Identity"])
    def test_every_op_changes_images_at_full_magnitude(self, name):
        op = RandAugment(num_ops=1, magnitude=30, ops=[name])
        x = make_batch(4)
        y = op(x, generator=gen(28))
        assert y.shape == x.shape and y.dtype == x.dtype
        assert not torch.equal(y, x)

    @pytest.mark.parametrize("name,reference", [
        ("Equalize", TF.equalize), ("AutoContrast", TF.autocontrast),
        ("Posterize", lambda img: TF.posterize(img, 4)),
        ("Solarize", lambda img: TF.solarize(img, 0.0)),
    ])
    def test_pointwise_ops_match_torchvision(self, name, reference):
        op = RandAugment(num_ops=1, magnitude=30, ops=[name])  # full magnitude: 4 bits, thr 0
        x = make_batch(4)
        y = op(x, generator=gen(29))
        for i in range(4):
            assert max_diff(y[i], reference(x[i])) <= (0 if name != "AutoContrast" else 1)

    def test_rejects_bad_settings(self):
        with pytest.raises(VistrainError, match="magnitude"):
            RandAugment(magnitude=31)
        with pytest.raises(VistrainError, match="unknown"):
            RandAugment(ops=["Blur"])


class TestTrivialAugment:
    def test_common(self):
        check_common(TrivialAugment())

    def test_per_sample_op_and_magnitude(self):
        params = TrivialAugment().make_params((64, 3, 8, 8), gen(30))
        assert params["op"].shape == (64, 1) and params["magnitude"].abs().max() <= 1
        check_varies(params["op"])
        check_varies(params["magnitude"])


# -- presets ----------------------------------------------------------------------------------

class TestPresets:
    @pytest.mark.parametrize("preset", list(PRESETS))
    @pytest.mark.parametrize("policy", ["none", "randaugment", "trivialaugment"])
    def test_every_preset_builds_and_runs(self, preset, policy):
        cfg = AugmentConfig(preset=preset, policy=policy, mixup=0.2, cutmix=1.0)
        augment, mix = build_augmentation(cfg, input_size=20, num_classes=4)
        x = make_batch(4, h=20, w=20)
        y = augment(x, generator=gen(31))
        assert y.shape == (4, 3, 20, 20) and y.dtype == torch.uint8
        xm, target = mix(y, torch.tensor([0, 1, 2, 3]), generator=gen(32))
        assert target.shape == (4, 4)
        assert describe(cfg, 20)[-1].startswith("MixUp")

    def test_none_is_identity(self):
        augment, mix = build_augmentation(AugmentConfig(preset="none"), 20, 4)
        x = make_batch()
        assert torch.equal(augment(x, generator=gen()), x) and mix is None
        assert describe(AugmentConfig(preset="none")) == ["no augmentation"]

    def test_domain_switches(self):
        names = lambda cfg: [type(op).__name__ for op in build_augmentation(cfg, 20, 4)[0].ops]
        assert "RandomHorizontalFlip" in names(AugmentConfig(preset="light"))
        assert "RandomHorizontalFlip" not in names(AugmentConfig(preset="light", hflip=False))
        assert "RandomVerticalFlip" in names(AugmentConfig(preset="light", vflip=True))
        assert "RandomRotation" not in names(AugmentConfig(preset="medium", rotation=0))
        assert "RandomRotation" in names(AugmentConfig(preset="none", rotation=90))
        assert "ColorJitter" not in names(AugmentConfig(preset="medium", policy="randaugment"))
        assert any("vertical flip" in line for line in describe(AugmentConfig(vflip=True)))

    def test_jitter_setting_picks_the_colour_model(self):
        jitter = lambda cfg: next(op for op in build_augmentation(cfg, 20, 4)[0].ops
                                  if isinstance(op, ColorJitter))
        assert jitter(AugmentConfig(preset="medium")).fused
        assert not jitter(AugmentConfig(preset="medium", jitter="hsv")).fused
        assert any("sequential, HSV hue" in line
                   for line in describe(AugmentConfig(preset="medium", jitter="hsv")))
        with pytest.raises(VistrainError, match="augment.jitter"):
            build_augmentation(AugmentConfig(jitter="yiq"), 20, 4)
        from vistrain.cli.common import config_from_args
        from vistrain.cli.main import build_parser
        args = build_parser().parse_args(["train", "DATA", "--jitter", "hsv"])
        assert config_from_args(args, "DATA").augment.jitter == "hsv"
        assert config_from_args(build_parser().parse_args(["train", "DATA"]), "DATA").augment.jitter == "matrix"

    def test_bad_config_names_the_setting(self):
        with pytest.raises(VistrainError, match="augment.preset"):
            build_augmentation(AugmentConfig(preset="extreme"), 20, 4)
        with pytest.raises(VistrainError, match="augment.policy"):
            build_augmentation(AugmentConfig(policy="autoaugment"), 20, 4)
