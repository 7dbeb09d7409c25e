"""Resize modes, draft decode, normalization modes and image modes against PIL / torchvision."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from vistrain.imageio.read import load_image, to_rgb
from vistrain.transforms.normalize import normalize_batch, resolve_normalization
from vistrain.transforms.resize import INTERPOLATIONS, resize_image

TV = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
      "bicubic": InterpolationMode.BICUBIC, "lanczos": InterpolationMode.LANCZOS}


def _img(w, h, seed=0):
    rng = np.random.default_rng(seed)
    # smooth gradient + noise: both interpolation and rounding differences would show
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("interp", list(INTERPOLATIONS))
@pytest.mark.parametrize("wh", [(640, 480), (333, 501), (224, 224), (100, 90)])
def test_crop_mode_equals_torchvision_resize_centercrop(interp, wh):
    img = _img(*wh)
    size, crop_pct = 224, 0.875
    ref = v2.Compose([v2.Resize(int(size / crop_pct), interpolation=TV[interp], antialias=True),
                      v2.CenterCrop(size)])(img)
    out = resize_image(img, size, mode="crop", interpolation=interp, crop_pct=crop_pct)
    assert out.size == (size, size)
    assert np.array_equal(np.asarray(out), np.asarray(ref))


@pytest.mark.parametrize("interp", list(INTERPOLATIONS))
def test_stretch_equals_pil_resize(interp):
    img = _img(300, 120)
    out = resize_image(img, 64, mode="stretch", interpolation=interp)
    assert np.array_equal(np.asarray(out), np.asarray(img.resize((64, 64), INTERPOLATIONS[interp])))


@pytest.mark.parametrize("wh,box", [((300, 150), (0, 25, 100, 75)), ((150, 300), (25, 0, 75, 100))])
def test_letterbox_geometry(wh, box):
    img = _img(*wh)
    out = np.asarray(resize_image(img, 100, mode="letterbox", interpolation="bilinear", fill=7))
    left, top, right, bottom = box
    inner = np.asarray(img.resize((right - left, bottom - top), Image.Resampling.BILINEAR))
    assert np.array_equal(out[top:bottom, left:right], inner)
    mask = np.ones(out.shape[:2], bool)
    mask[top:bottom, left:right] = False
    assert (out[mask] == 7).all()


def test_unknown_mode_and_interpolation_are_user_errors():
    from vistrain.errors import VistrainError
    with pytest.raises(VistrainError, match="resize mode"):
        resize_image(_img(10, 10), 8, mode="zoom")
    with pytest.raises(VistrainError, match="interpolation"):
        resize_image(_img(10, 10), 8, interpolation="cubic")


DRAFT_TOLERANCE = 2.0   # mean abs difference (grey levels) of draft vs full decode after resize


def test_draft_decode_close_to_full_decode(tmp_path):
    skdata = pytest.importorskip("skimage.data")
    big = Image.fromarray(skdata.astronaut()).resize((2000, 1500), Image.Resampling.BICUBIC)
    path = tmp_path / "big.jpg"
    big.save(path, quality=92)
    drafted = load_image(path, min_side=224)
    assert drafted.size == (500, 375)    # 1/4 scale: shorter side >= DRAFT_MARGIN (1.5) * 224
    full = load_image(path)
    assert full.size == (2000, 1500)
    a = np.asarray(resize_image(drafted, 224), np.float64)
    b = np.asarray(resize_image(full, 224), np.float64)
    mad = np.abs(a - b).mean()
    assert mad < DRAFT_TOLERANCE, mad
    assert mad > 0   # the draft path really was taken (different decoder output)
    small = tmp_path / "small.jpg"
    big.resize((400, 300)).save(small)
    assert load_image(small, min_side=224).size == (400, 300)   # no reduction below the margin
    huge = tmp_path / "huge.jpg"
    big.resize((4000, 3000)).save(huge, quality=80)
    assert load_image(huge, min_side=64).size == (1000, 750)   # capped at 1/4, never 1/8


def _known(mean, std, n=20_000, seed=0):
    """uint8 batch (1, 3, n/100, 100) whose channel c is mean[c] +- std[c] in equal shares:
    exactly that mean and (population) std up to rounding to integers, no clipping."""
    sign = np.where(np.random.default_rng(seed).permutation(n) % 2 == 0, 1.0, -1.0)
    x = np.asarray(mean)[:, None] + np.asarray(std)[:, None] * sign[None, :]
    return torch.from_numpy(np.rint(x).astype(np.uint8).reshape(1, 3, -1, 100))


def test_normalization_modes_give_the_stated_statistics():
    m255, s255 = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
    x = _known(m255, s255)
    ones = lambda y: (y.mean(dim=(0, 2, 3)), y.std(dim=(0, 2, 3)))  # noqa: E731
    for mode, kw in (("imagenet", {}), ("model", dict(model_mean=(0.485, 0.456, 0.406),
                                                      model_std=(0.229, 0.224, 0.225)))):
        n = resolve_normalization(mode, warn=False, **kw)
        mean, std = ones(normalize_batch(x, n.scale, n.mean, n.std))
        assert mean.abs().max() < 0.02 and (std - 1).abs().max() < 0.02, (mode, mean, std)
    xf = x.double() / 255
    stats = (xf.mean(dim=(0, 2, 3)).tolist(), xf.std(dim=(0, 2, 3), unbiased=False).tolist())
    n = resolve_normalization("dataset", dataset_stats=stats, pretrained=False)
    mean, std = ones(normalize_batch(x.double(), n.scale, n.mean, n.std))
    assert mean.abs().max() < 1e-9 and (std - 1).abs().max() < 1e-4
    full = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    for mode, lo, hi in (("none", 0, 255), ("minmax", 0, 1), ("symmetric", -1, 1)):
        n = resolve_normalization(mode, warn=False)
        y = normalize_batch(full, n.scale, n.mean, n.std)
        assert y.min().item() == pytest.approx(lo) and y.max().item() == pytest.approx(hi), mode
    n = resolve_normalization("explicit", mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5])
    assert n.mean == (0.1, 0.2, 0.3)
    assert resolve_normalization("auto", pretrained=False, dataset_stats=stats).mode == "dataset"
    assert resolve_normalization("auto", model_mean=(0.5,) * 3, model_std=(0.5,) * 3).mode == "model"


# -- load_image: modes, alpha, EXIF -----------------------------------------------------------

def _px(img, xy=(0, 0)):
    return img.getpixel(xy)


def test_alpha_is_composited_on_the_stated_background(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 128))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.mode == "RGB" and _px(out) == (255, 255, 255)
    assert _px(out, (1, 1)) == pytest.approx((255, 127, 127), abs=1)
    out = load_image(tmp_path / "a.png", background=(0, 0, 255))
    assert _px(out) == (0, 0, 255) and _px(out, (1, 1)) == pytest.approx((128, 0, 127), abs=1)
    la = Image.new("LA", (2, 2), (100, 0))
    la.save(tmp_path / "la.png")
    assert _px(load_image(tmp_path / "la.png")) == (255, 255, 255)
    pa = Image.new("PA", (2, 2))
    pa.putpalette([10, 20, 30] * 256)
    pa.putpixel((0, 0), (0, 0))
    pa.putpixel((1, 1), (0, 255))
    out = to_rgb(pa)
    assert _px(out) == (255, 255, 255) and _px(out, (1, 1)) == (10, 20, 30)


def test_palette_with_transparency(tmp_path):
    p = Image.new("P", (2, 2), 1)
    p.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.save(tmp_path / "p.png", transparency=0)
    out = load_image(tmp_path / "p.png")
    assert _px(out) == (255, 255, 255) and _px(out, (1, 1)) == (200, 100, 50)
    p.save(tmp_path / "p2.png")   # no transparency: plain palette lookup
    assert _px(load_image(tmp_path / "p2.png")) == (0, 0, 0)


def test_grey_bilevel_cmyk_and_high_bit_depth(tmp_path):
    Image.new("L", (3, 3), 77).save(tmp_path / "l.png")
    assert _px(load_image(tmp_path / "l.png")) == (77, 77, 77)
    assert load_image(tmp_path / "l.png", grayscale=True).mode == "L"
    one = Image.new("1", (2, 2), 0)
    one.putpixel((1, 1), 1)
    one.save(tmp_path / "one.png")
    out = load_image(tmp_path / "one.png")
    assert _px(out) == (0, 0, 0) and _px(out, (1, 1)) == (255, 255, 255)
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    r, g, b = _px(load_image(tmp_path / "cmyk.jpg"))
    assert r > 240 and g < 15 and b < 15      # cyan 0, magenta+yellow full: red
    arr16 = np.array([[0, 32896], [65535, 65535]], dtype=np.uint16)
    Image.fromarray(arr16).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode.startswith("I")
    out = np.asarray(load_image(tmp_path / "i16.png", grayscale=True))
    assert out.tolist() == [[0, 128], [255, 255]]   # nominal 16-bit range, not clipped at 255
    arr32 = np.array([[-1000, 0], [1000, 3000]], dtype=np.int32)
    Image.fromarray(arr32, "I").save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    out = np.asarray(load_image(tmp_path / "i32.tif", grayscale=True))
    assert out.tolist() == [[0, 64], [128, 255]]    # min/max of the image -> 0..255


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)     # left half red
    arr[:, 20:] = (0, 0, 255)     # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6              # "rotate 90 CW to display"
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rot.jpg")
    assert out.size == (20, 40)   # portrait after rotation
    top, bottom = np.asarray(out)[:10].mean((0, 1)), np.asarray(out)[-10:].mean((0, 1))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
    Image.fromarray(arr).save(tmp_path / "plain.jpg", quality=95)
    assert load_image(tmp_path / "plain.jpg").size == (40, 20)


def test_preview_figure_and_cli(tmp_path, capsys):
    from conftest import make_image_folder
    from vistrain.cli.main import main
    from vistrain.report.preprocess_preview import preview_preprocessing
    from vistrain.transforms.preprocess import Preprocess
    root = make_image_folder(tmp_path / "d", per_class=3)
    (root / "a" / "broken.png").write_bytes(b"")
    paths = sorted(root.rglob("*.png"))[:4] + [root / "a" / "broken.png"]
    out = preview_preprocessing(paths, Preprocess(size=32), tmp_path / "p.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 400
    assert main(["preview", str(root), "--out", str(tmp_path / "cli.png"), "--n", "3",
                 "--size", "48"]) == 0
    assert (tmp_path / "cli.png").stat().st_size > 5000
    assert "3 images" in capsys.readouterr().out
