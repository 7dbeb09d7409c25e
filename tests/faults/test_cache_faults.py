"""Faults of the pixel and feature caches: full disks, dead decode workers, damaged entries,
replaced images, non-atomic writes, and the image-size guard.

Every fault must end in one line naming the problem and the fix (or a logged warning and a
rebuild), within seconds, with no ``.part`` file left: never a hang, a traceback or wrong pixels.
"""
from __future__ import annotations

import contextlib
import errno
import faulthandler
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vistrain import fsutil
from vistrain.cli.main import main as cli
from vistrain.data.cache import budget as cache_budget, build as cache_build, entry as cache_entry
from vistrain.data.cache import fingerprint as key_mod
from vistrain.imageio import read as image_io
from vistrain.data.cache.budget import CacheSpaceError
from vistrain.data.cache.build import build_pixel_cache
from vistrain.data.cache.entry import open_array_entry, sidecar
from vistrain.data.cache.fingerprint import cache_key
from vistrain.data.cache.pixels import EvalAndTrainPixels
from vistrain.errors import ImageLoadError, VistrainError
from vistrain.training.features import cached_features
from vistrain.transforms.preprocess import Preprocess

SIZE = 16
SHAPE = (3, SIZE, SIZE)


def _images(root: Path, n: int, ext: str = "png", wh=(30, 20), seed: int = 0) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = root / f"{i:04d}.{ext}"
        Image.fromarray(rng.integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fail instead of hanging: a build that waits forever for a dead worker raises here."""
    def fail(*_):
        raise TimeoutError(f"no result within {seconds} s: the build hangs")
    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _parts(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".part" in p.name] if folder.exists() else []


def _assert_one_line_space_error(err: Exception, folder: Path) -> None:
    msg = str(err)
    assert "\n" not in msg and str(folder) in msg
    assert "VISTRAIN_CACHE" in msg and "data={'cache': 'off'}" in msg  # a Python caller's spelling


# Pixel functions run in forked decode workers: module level, picklable.
class _Pixels:
    def __init__(self):
        self.pre = Preprocess(size=SIZE)

    def __call__(self, path):
        return self.pre.pixels(path)


class _KilledBySigbus(_Pixels):
    """What a worker writing into a memory map on a full disk suffers."""

    def __call__(self, path):
        if path.endswith("0070.png"):
            faulthandler.disable()  # pytest's handler would print a stack dump into the test log
            os.kill(os.getpid(), signal.SIGBUS)
        return super().__call__(path)


class _DiskFull(_Pixels):
    def __call__(self, path):
        if path.endswith("0070.png"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().__call__(path)


# -- multi-worker decode without a cache folder ---------------------------------------------------
def test_multi_worker_decode_without_cache_folder_returns_the_pixels(tmp_path):
    paths = _images(tmp_path / "img", 100)
    (tmp_path / "img" / "empty.png").write_bytes(b"")
    paths.insert(37, str(tmp_path / "img" / "empty.png"))
    with _deadline(120):
        one, bad_one = build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=None, workers=0, progress=False)
        many, bad_many = build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=None, workers=2, progress=False)
    assert one.shape == (101, *SHAPE) and one[:37].any() and one[38:].any()
    np.testing.assert_array_equal(many, one)
    assert list(bad_many) == list(bad_one) == [paths[37]]
    assert not one[37].any()


# -- disk space -------------------------------------------------------------------------------------
def test_no_room_for_the_pixel_cache_is_one_line_before_decoding(tmp_path, monkeypatch):
    paths = _images(tmp_path / "img", 20)
    cache = tmp_path / "cache"
    real = cache_budget.shutil.disk_usage
    monkeypatch.setattr(cache_budget.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(CacheSpaceError) as err:
        build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=cache, workers=0, progress=False)
    _assert_one_line_space_error(err.value, cache)
    needed = 20 * 3 * SIZE * SIZE + 4096  # pixels + the .npy header's room
    assert f"needs {needed:,} bytes" in str(err.value) and "1,000 bytes are free" in str(err.value)
    assert not _parts(cache)


def test_disk_full_when_reserving_the_file(tmp_path, monkeypatch):
    paths = _images(tmp_path / "img", 20)
    cache = tmp_path / "cache"

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cache_build.os, "posix_fallocate", full, raising=False)
    with pytest.raises(CacheSpaceError) as err:
        build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=cache, workers=0, progress=False)
    _assert_one_line_space_error(err.value, cache)
    assert not _parts(cache) and not list(cache.glob("pixels-*"))


@pytest.mark.parametrize("workers", [0, 2])
def test_disk_full_in_a_decode_worker_ends_the_build(tmp_path, workers):
    paths = _images(tmp_path / "img", 100)
    cache = tmp_path / "cache"
    with _deadline(120), pytest.raises(CacheSpaceError) as err:
        build_pixel_cache(paths, _DiskFull(), SHAPE, cache_dir=cache, workers=workers, progress=False)
    _assert_one_line_space_error(err.value, cache)
    assert not _parts(cache) and not list(cache.glob("pixels-*"))


def test_worker_killed_by_sigbus_ends_the_build_instead_of_hanging(tmp_path):
    paths = _images(tmp_path / "img", 100)
    cache = tmp_path / "cache"
    t = time.monotonic()
    with _deadline(120), pytest.raises(CacheSpaceError) as err:
        build_pixel_cache(paths, _KilledBySigbus(), SHAPE, cache_dir=cache, workers=2, progress=False)
    assert time.monotonic() - t < 60
    _assert_one_line_space_error(err.value, cache)
    assert "SIGBUS" in str(err.value)
    assert not _parts(cache) and not list(cache.glob("pixels-*"))
    # the next build, with a healthy pixel function, works
    pixels, bad = build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=cache, workers=2, progress=False)
    assert not bad and pixels.shape == (100, *SHAPE)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 1 MiB filesystem (needs root and tmpfs; skipped elsewhere)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot run mount")
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        # lazy: a memory map still held by a test's exception traceback keeps the mount busy
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=20)


def test_really_full_filesystem(tmp_path, tiny_tmpfs, monkeypatch):
    """1.2 MB of pixels for a 1 MiB disk: refused up front; past the check (the free space
    over-reported), the block reservation fails; without it, the workers die of SIGBUS."""
    paths = _images(tmp_path / "img", 100)
    cache = tiny_tmpfs / "cache"
    shape = (3, 64, 64)
    pre = Preprocess(size=64)
    with _deadline(120):
        with pytest.raises(CacheSpaceError) as err:
            build_pixel_cache(paths, pre.pixels, shape, cache_dir=cache, workers=2, progress=False)
        _assert_one_line_space_error(err.value, cache)
        real = cache_budget.shutil.disk_usage
        monkeypatch.setattr(cache_budget.shutil, "disk_usage", lambda p: real(p)._replace(free=10**12))
        with pytest.raises(CacheSpaceError) as err:
            build_pixel_cache(paths, pre.pixels, shape, cache_dir=cache, workers=2, progress=False)
        _assert_one_line_space_error(err.value, cache)
        assert not _parts(cache)
        monkeypatch.delattr(cache_build.os, "posix_fallocate")
        with pytest.raises(CacheSpaceError) as err:
            build_pixel_cache(paths, pre.pixels, shape, cache_dir=cache, workers=2, progress=False)
        _assert_one_line_space_error(err.value, cache)
        assert "SIGBUS" in str(err.value)
        assert not _parts(cache) and not [p for p in cache.iterdir() if not p.name.startswith(".vistrain")]


def test_feature_cache_space(tmp_path, monkeypatch, caplog):
    cache = tmp_path / "features"
    feats = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    real = cache_budget.shutil.disk_usage
    monkeypatch.setattr(cache_budget.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    computed = []
    with pytest.raises(CacheSpaceError) as err:  # with an estimate: refused before computing
        cached_features(cache, "k", lambda: computed.append(1) or feats, expected_bytes=feats.nbytes)
    _assert_one_line_space_error(err.value, cache)
    assert not computed
    with caplog.at_level(logging.WARNING, logger="vistrain"):  # computed: kept, not thrown away
        out, hit = cached_features(cache, "k", lambda: feats)
    assert not hit and out is feats and "features not cached" in caplog.text
    assert not [p for p in cache.iterdir() if not p.name.startswith(".vistrain")]  # only its bookkeeping


# -- integrity --------------------------------------------------------------------------------------
def _truncate(npy: Path):
    with open(npy, "r+b") as f:
        f.truncate(npy.stat().st_size // 2)


def _overwrite_same_size(npy: Path):
    data = bytearray(npy.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 300] = bytes((b + 77) % 256 for b in data[middle:middle + 300])
    npy.write_bytes(bytes(data))


def _break_sidecar(npy: Path):
    side = sidecar(npy)
    side.write_text(side.read_text()[: len(side.read_text()) // 2])


def _wrong_shape(npy: Path):
    arr = np.load(npy)
    np.save(npy, np.ascontiguousarray(arr.reshape(len(arr), SHAPE[0], SIZE * 2, SIZE // 2)))


def _lose_sidecar(npy: Path):
    sidecar(npy).unlink()


DAMAGE = {"truncated": _truncate, "same-size corruption": _overwrite_same_size,
          "broken sidecar": _break_sidecar, "wrong shape": _wrong_shape, "no sidecar": _lose_sidecar}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_pixel_cache_is_rebuilt_with_a_warning(tmp_path, damage, caplog):
    paths = _images(tmp_path / "img", 40)
    cache = tmp_path / "cache"
    first, _ = build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=cache, workers=0, progress=False)
    good = np.array(first)
    del first
    (npy,) = cache.glob("pixels-*.npy")
    DAMAGE[damage](npy)
    with caplog.at_level(logging.WARNING, logger="vistrain"):
        again, bad = build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=cache, workers=0, progress=False)
    assert "damaged" in caplog.text and str(npy) in caplog.text
    np.testing.assert_array_equal(again, good)
    assert not bad
    open_array_entry(npy, full=True)  # the rebuilt entry is intact


@pytest.mark.parametrize("damage", ["truncated", "same-size corruption", "broken sidecar", "no sidecar"])
def test_damaged_feature_cache_is_recomputed_with_a_warning(tmp_path, damage, caplog):
    cache = tmp_path / "features"
    feats = np.random.default_rng(1).normal(size=(3000, 32)).astype(np.float32)
    assert cached_features(cache, "k", lambda: feats)[1] is False
    out, hit = cached_features(cache, "k", lambda: 1 / 0)
    assert hit
    np.testing.assert_array_equal(out, feats)
    DAMAGE[damage](cache / "features-k.npy")
    with caplog.at_level(logging.WARNING, logger="vistrain"):
        out, hit = cached_features(cache, "k", lambda: feats)
    assert not hit and "damaged" in caplog.text
    np.testing.assert_array_equal(out, feats)
    assert cached_features(cache, "k", lambda: 1 / 0)[1]


def test_feature_cache_of_other_rows_is_recomputed(tmp_path, caplog):
    cache = tmp_path / "features"
    cached_features(cache, "k", lambda: np.zeros((10, 4), np.float32))
    with caplog.at_level(logging.WARNING, logger="vistrain"):
        out, hit = cached_features(cache, "k", lambda: np.ones((12, 4), np.float32), rows=12)
    assert not hit and out.shape == (12, 4) and "expected" in caplog.text


def test_large_entry_is_sample_checked_on_open_and_fully_by_verify(tmp_path, monkeypatch):
    paths = _images(tmp_path / "img", 200)
    cache = tmp_path / "cache"
    build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=cache, workers=0, progress=False)
    (npy,) = cache.glob("pixels-*.npy")
    monkeypatch.setattr(cache_entry, "FULL_VERIFY_BYTES", 0)
    monkeypatch.setattr(cache_entry, "SAMPLE_BLOCKS", 1)
    checked = []
    real = cache_entry.crc_rows
    monkeypatch.setattr(cache_entry, "crc_rows", lambda a, s, e: checked.append(s) or real(a, s, e))
    open_array_entry(npy)
    assert 2 <= len(checked) <= 3  # first, last and one random block of 13
    checked.clear()
    open_array_entry(npy, full=True)
    assert len(checked) == 13


def test_cache_verify_command(tmp_path, monkeypatch, capsys):
    root = tmp_path / "vc"
    monkeypatch.setenv("VISTRAIN_CACHE", str(root))
    paths = _images(tmp_path / "img", 20)
    for size in (12, 14):
        build_pixel_cache(paths, Preprocess(size=size).pixels, (3, size, size), spec={"size": size},
                          cache_dir=root / "pixels", workers=0, progress=False)
    cached_features(root / "features", "k", lambda: np.ones((20, 4), np.float32))
    assert cli(["cache", "--verify", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] == {"checked": 3, "damaged": []}
    npy = sorted((root / "pixels").glob("pixels-*.npy"))[0]
    _overwrite_same_size(npy)
    assert cli(["cache", "--verify", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [d["file"] for d in doc["verified"]["damaged"]] == [str(npy)]
    assert "checksum" in doc["verified"]["damaged"][0]["reason"]
    assert not npy.exists() and not sidecar(npy).exists()
    assert cli(["cache", "--verify"]) == 0
    assert "verified 2 files: all intact" in capsys.readouterr().out


# -- source fingerprint -----------------------------------------------------------------------------
def _replace_keeping_size_and_mtime(path: Path, arr: np.ndarray):
    st = path.stat()
    Image.fromarray(arr).save(path)
    assert path.stat().st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_replaced_image_with_same_size_and_mtime_is_decoded_again(tmp_path):
    paths = _images(tmp_path / "img", 10, ext="bmp")  # uncompressed: same size for any content
    cache = tmp_path / "cache"
    before, _ = build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=cache, workers=0, progress=False)
    before = np.array(before)
    _replace_keeping_size_and_mtime(Path(paths[3]), np.full((20, 30, 3), 7, np.uint8))
    after, _ = build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=cache, workers=0, progress=False)
    assert (after[3] == 7).all() and not (before[3] == 7).all()
    np.testing.assert_array_equal(np.delete(after, 3, 0), np.delete(before, 3, 0))


def test_strict_fingerprint_sees_a_change_in_the_middle_of_a_large_file(tmp_path, monkeypatch):
    (path,) = _images(tmp_path / "img", 1, ext="bmp", wh=(300, 300))  # 270 kB > 2 x 64 KiB
    spec = {"size": SIZE}
    keys = {"default": cache_key([path], spec), "strict": cache_key([path], spec, strict=True)}
    monkeypatch.setenv("VISTRAIN_CACHE_STRICT", "1")
    assert cache_key([path], spec) == keys["strict"] != keys["default"]
    monkeypatch.delenv("VISTRAIN_CACHE_STRICT")
    arr = np.asarray(Image.open(path)).copy()
    arr[140:160] = 255 - arr[140:160]  # rows in the middle of the file only
    _replace_keeping_size_and_mtime(Path(path), arr)
    assert cache_key([path], spec) == keys["default"]  # the documented limit of the cheap mode
    assert cache_key([path], spec, strict=True) != keys["strict"]


# -- atomic writes ----------------------------------------------------------------------------------
def test_every_cache_file_arrives_by_an_atomic_rename(tmp_path, monkeypatch):
    renamed = []
    real = os.replace

    def replace(src, dst):
        renamed.append(Path(dst))
        real(src, dst)
    monkeypatch.setattr(fsutil.os, "replace", replace)  # the os module: every caller
    paths = _images(tmp_path / "img", 70)
    cache = tmp_path / "cache"
    build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=cache, workers=2, progress=False)
    EvalAndTrainPixels.for_paths(Preprocess(size=SIZE), paths, cache)  # a sides memo
    cached_features(cache, "k", lambda: np.ones((70, 4), np.float32))
    files = sorted(p for p in cache.iterdir() if not p.name.startswith(".vistrain"))
    assert len(files) == 5 and not _parts(cache)  # pixels .npy/.json, sides .json, features .npy/.json
    bookkeeping = [cache / ".vistrain-cache-index.json", cache / ".vistrain-run"]  # the index, the marker
    assert sorted(set(renamed)) == sorted(files + bookkeeping)


# -- image-size guard -------------------------------------------------------------------------------
@contextlib.contextmanager
def _limit(n):
    before = image_io.max_image_pixels()
    image_io.set_max_image_pixels(n)
    try:
        yield
    finally:
        image_io.set_max_image_pixels(before)


def test_a_100_megapixel_image_decodes(tmp_path):
    path = tmp_path / "scan.png"
    Image.fromarray(np.zeros((10_000, 10_000), np.uint8)).save(path)
    img = image_io.load_image(path, grayscale=True)
    assert img.size == (10_000, 10_000)
    assert Image.MAX_IMAGE_PIXELS == image_io.MAX_PIXELS == 300_000_000


@pytest.mark.parametrize("limit", [4000, 2000])  # Pillow's warning (> limit), its error (> 2 x limit)
def test_an_image_above_the_limit_is_one_line_with_its_size_and_the_flag(tmp_path, limit):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((50, 100), np.uint8)).save(path)
    with _limit(limit), pytest.raises(ImageLoadError) as err:
        image_io.load_image(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert "5,000 pixels" in msg and f"limit of {limit:,}" in msg and "--max-image-pixels 5000" in msg
    with _limit(5000):
        assert Image.MAX_IMAGE_PIXELS == 5000
        assert image_io.load_image(path).size == (100, 50)


def test_raising_the_limit_rebuilds_a_cache_that_refused_images(tmp_path):
    paths = _images(tmp_path / "img", 4)
    cache = tmp_path / "cache"
    with _limit(100):
        _, bad = build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=cache, workers=0, progress=False)
    assert len(bad) == 4 and all("--max-image-pixels 600" in r for r in bad.values())
    pixels, bad = build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=cache, workers=0, progress=False)
    assert not bad and pixels.any()


def test_fingerprints_read_by_threads_equal_serial_ones(tmp_path, monkeypatch):
    paths = _images(tmp_path / "img", 80)
    serial = cache_key(paths, {"size": SIZE})
    key_mod._FINGERPRINTS.clear()
    monkeypatch.setattr(key_mod, "SLOW_FILE_S", 0.0)  # every disk counts as slow: threads
    assert cache_key(paths, {"size": SIZE}) == serial
    assert cache_key(paths + [str(tmp_path / "gone.png")], {"size": SIZE}) != serial


def test_unwritable_cache_folder_is_one_line(tmp_path, monkeypatch, caplog):
    paths = _images(tmp_path / "img", 10)
    cache = tmp_path / "cache"

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(fsutil.tempfile, "mkstemp", read_only)
    with pytest.raises(VistrainError) as err:
        build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=cache, workers=0, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and str(cache) in msg and "Read-only" in msg and "data={'cache': 'off'}" in msg
    feats = np.ones((5, 3), np.float32)
    with caplog.at_level(logging.WARNING, logger="vistrain"):
        out, hit = cached_features(tmp_path / "features", "k", lambda: feats)
    assert out is feats and not hit and "features not cached" in caplog.text


def test_feature_space_estimate_before_the_folder_exists(tmp_path):
    cache = tmp_path / "not" / "yet" / "features"
    feats, hit = cached_features(cache, "k", lambda: np.ones((5, 3), np.float32), expected_bytes=60)
    assert not hit and (cache / "features-k.npy").exists()


def test_decoding_in_the_main_process_leaves_its_torch_threads_alone(tmp_path):
    import torch
    paths = _images(tmp_path / "img", 5)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        build_pixel_cache(paths, _Pixels(), SHAPE, cache_dir=None, workers=0, progress=False)
        assert torch.get_num_threads() == 2  # one thread is for decode workers, not training
    finally:
        torch.set_num_threads(before)
