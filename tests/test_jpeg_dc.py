"""DC-only 1/8-scale decode of progressive JPEGs (vistrain.imageio.jpeg): parser and exactness."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from vistrain.imageio.jpeg import (DQT, EOI, SOF2, SOI, SOS, decode_dc_only, dc_only_stream,
                                jpeg_scans)

# libjpeg's jpeg_simple_progression() for YCbCr, which PIL's progressive=True uses:
# (components, Ss, Se, Ah, Al).  The DC scan has Al=1 and is refined after the AC scans.
COLOR_SCRIPT = [((1, 2, 3), 0, 0, 0, 1), ((1,), 1, 5, 0, 2), ((3,), 1, 63, 0, 1),
                ((2,), 1, 63, 0, 1), ((1,), 6, 63, 0, 2), ((1,), 1, 63, 2, 1),
                ((1, 2, 3), 0, 0, 1, 0), ((3,), 1, 63, 1, 0), ((2,), 1, 63, 1, 0),
                ((1,), 1, 63, 1, 0)]
GRAY_SCRIPT = [((1,), 0, 0, 0, 1), ((1,), 1, 5, 0, 2), ((1,), 6, 63, 0, 2),
               ((1,), 1, 63, 2, 1), ((1,), 0, 0, 1, 0), ((1,), 1, 63, 1, 0)]


def _rgb(h: int = 150, w: int = 200, seed: int = 0) -> np.ndarray:
    """Colour gradient + noise, (h, w, 3) uint8: detail in luma and chroma."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 128 / (w + h) + 60], -1)
    noise = np.random.default_rng(seed).normal(0, 25, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _jpeg(arr: np.ndarray, mode: str | None = None, **save) -> bytes:
    img = Image.fromarray(arr)
    img = img.convert(mode) if mode else img
    buf = io.BytesIO()
    img.save(buf, "JPEG", **{"progressive": True, "quality": 90, **save})
    return buf.getvalue()


def _draft8(data: bytes, mode: str = "RGB") -> np.ndarray:
    """Reference: the whole file decoded by libjpeg at 1/8 scale."""
    img = Image.open(io.BytesIO(data))
    img.draft(mode, (img.width // 8, img.height // 8))
    img.load()
    return np.asarray(img)


def _scans(data: bytes) -> list[tuple]:
    return [(s.components, s.ss, s.se, s.ah, s.al) for s in jpeg_scans(data) if s.marker == SOS]


CASES = {
    "444": dict(subsampling=0),
    "422": dict(subsampling=1),
    "420": dict(subsampling=2),
    "420-optimize": dict(subsampling=2, optimize=True),
    "444-q50": dict(subsampling=0, quality=50),
    "rst-blocks": dict(restart_marker_blocks=3),
    "rst-rows": dict(restart_marker_rows=1, subsampling=1),
    "gray": dict(mode="L"),
    "cmyk": dict(mode="CMYK"),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_dc_only_decode_is_bit_identical_to_full_draft(case, mode):
    data = _jpeg(_rgb(), **CASES[case])
    img = decode_dc_only(data, mode)
    assert img is not None and img.size == (25, 19)          # ceil(200 / 8), ceil(150 / 8)
    np.testing.assert_array_equal(np.asarray(img), _draft8(data, mode))
    assert len(dc_only_stream(data)) < len(data) / 2


def test_parser_finds_the_progression_script():
    data = _jpeg(_rgb())
    segs = jpeg_scans(data)
    assert segs[0].marker == SOI and segs[-1].marker == EOI and segs[-1].end == len(data)
    assert [s.marker for s in segs].count(SOF2) == 1
    assert next(s for s in segs if s.marker == SOF2).components == (1, 2, 3)
    assert _scans(data) == COLOR_SCRIPT
    assert _scans(_jpeg(_rgb(), mode="L")) == GRAY_SCRIPT
    for prev, seg in zip(segs, segs[1:]):
        assert prev.end == seg.start                          # no gaps: PIL writes no fill
        assert data[seg.start] == 0xFF and data[seg.start + 1] == seg.marker
    assert [s.is_dc_scan for s in segs if s.marker == SOS] == [
        ss == se == 0 for _, ss, se, _, _ in COLOR_SCRIPT]


def test_parser_handles_restart_markers_and_fill_bytes():
    data = _jpeg(_rgb(), restart_marker_blocks=2)
    segs = jpeg_scans(data)
    assert 0xDD in [s.marker for s in segs]                   # DRI
    first = next(s for s in segs if s.marker == SOS)
    # 13 x 10 MCUs (4:2:0, 16x16 pixels each), a restart every 2 MCUs: 64 RSTn in the DC scan
    assert sum(data.count(bytes([0xFF, 0xD0 + k]), first.start, first.end) for k in range(8)) == 64
    assert _scans(data) == COLOR_SCRIPT
    # Fill bytes (0xFF) may precede any marker; libjpeg skips them, so must the parser.
    filled = b"".join((b"\xff\xff\xff" if s.marker != SOI else b"") + data[s.start:s.end]
                      for s in segs)
    assert _scans(filled) == COLOR_SCRIPT
    np.testing.assert_array_equal(np.asarray(decode_dc_only(filled)), _draft8(data))


def test_block_smoothing_is_why_dqt_is_patched():
    """Dropping the AC scans alone is not enough: with no AC data, libjpeg-turbo >= 2.1 smooths
    every DC coefficient with its neighbours (block smoothing), so the 1/8 image is blurred.
    Zeroing quantizer 1 in the DQT (what dc_only_stream does) turns that off."""
    data = _jpeg(_rgb(), mode="L")
    dropped = b"".join(data[s.start:s.end] for s in jpeg_scans(data)
                       if s.marker != SOS or s.is_dc_scan)
    ref = _draft8(data).astype(int)
    assert np.abs(_draft8(dropped).astype(int) - ref).max() >= 3    # measured: 4
    patched = dc_only_stream(data)
    assert len(patched) == len(dropped) and patched != dropped
    np.testing.assert_array_equal(_draft8(patched), ref)


def test_16bit_quant_tables_are_patched():
    data = _jpeg(_rgb(), subsampling=0)
    out = []
    for s in jpeg_scans(data):     # rewrite each 8-bit DQT table as a 16-bit one (same values)
        seg = data[s.start:s.end]
        if s.marker == DQT:
            body = b"".join(bytes([0x10 | seg[i] & 15]) + np.frombuffer(
                seg[i + 1:i + 65], np.uint8).astype(">u2").tobytes()
                for i in range(4, len(seg), 65))
            seg = b"\xff\xdb" + (len(body) + 2).to_bytes(2, "big") + body
        out.append(seg)
    data16 = b"".join(out)
    np.testing.assert_array_equal(_draft8(data16), _draft8(data))
    np.testing.assert_array_equal(np.asarray(decode_dc_only(data16)), _draft8(data))


def test_approximate_mode_drops_420_chroma_ac():
    """exact=False drops the 4:2:0 chroma AC scans, which libjpeg's 2x2 chroma IDCT at 1/8 scale
    reads: luma stays exact, chroma becomes flat 2x2 blocks (measured here: max 16 grey levels
    in RGB, mean 3.4; on two 4:2:0 photos mean 1.2 / 2.8, max 65 / 39)."""
    data = _jpeg(_rgb(), subsampling=2)
    assert len(dc_only_stream(data, exact=False)) < len(dc_only_stream(data))
    diff = np.abs(np.asarray(decode_dc_only(data, exact=False)).astype(int) - _draft8(data))
    assert 0 < diff.max() <= 24 and diff.mean() <= 5
    np.testing.assert_array_equal(np.asarray(decode_dc_only(data, "L", exact=False)),
                                  _draft8(data, "L"))
    # 4:4:4 and 4:2:2 decode chroma at 1x1 per block: nothing to drop, identical streams.
    data = _jpeg(_rgb(), subsampling=1)
    assert dc_only_stream(data, exact=False) == dc_only_stream(data)


def test_shared_quant_table_with_420_is_not_exact():
    data = _jpeg(_rgb(), subsampling=2, qtables=[list(range(1, 65))])   # one table for all
    assert dc_only_stream(data) is None
    np.testing.assert_array_equal(np.asarray(decode_dc_only(data, "L", exact=False)),
                                  _draft8(data, "L"))


def test_reduced_stream_is_complete_and_reports_full_size(tmp_path):
    data = _jpeg(_rgb())
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    img = Image.open(io.BytesIO(dc_only_stream(data)))
    assert img.size == (200, 150) and img.info.get("progressive")
    path = tmp_path / "p.jpg"
    path.write_bytes(data)
    for src in (path, str(path)):
        out = decode_dc_only(src)
        assert out.mode == "RGB" and out.size == (25, 19)


def test_multi_picture_file_index_is_dropped():
    arr = _rgb()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "MPO", save_all=True, append_images=[Image.fromarray(~arr)],
                              progressive=True, quality=90)
    data = buf.getvalue()
    assert b"MPF\x00" in data and b"MPF\x00" not in dc_only_stream(data)
    np.testing.assert_array_equal(np.asarray(decode_dc_only(data)), _draft8(data))


def test_not_progressive_or_broken_gives_none():
    prog = _jpeg(_rgb())
    png = io.BytesIO()
    Image.fromarray(_rgb()).save(png, "PNG")
    base = _jpeg(_rgb(), progressive=False)
    assert _scans(base) == [((1, 2, 3), 0, 63, 0, 0)]
    eoi = prog.rindex(b"\xff\xd9")
    bad = [base, png.getvalue(), b"", b"\xff\xd8", b"\xff\xd8\xff", prog[:len(prog) // 2],
           prog[:eoi], prog[:200], bytes(1000), b"\xff" * 1000, prog[:20] + b"\xff\xff" * 40]
    for data in bad:
        assert dc_only_stream(data) is None
        assert decode_dc_only(data) is None
    tiny = _jpeg(_rgb(5, 7))                   # progressive, but no 1/8 scale below 8 pixels
    assert dc_only_stream(tiny) is not None and decode_dc_only(tiny) is None
    with pytest.raises(ValueError):
        jpeg_scans(prog[:eoi])


def test_random_corruption_never_raises():
    data = _jpeg(_rgb(60, 80))
    rng = np.random.default_rng(1)
    outcomes = set()
    for k in range(200):
        bad = bytearray(data)
        for i in rng.integers(2, len(bad), size=3):       # flip 3 bytes, or truncate
            bad[i] = rng.integers(0, 256)
        bad = bytes(bad) if k % 2 else data[:rng.integers(2, len(data))]
        stream = dc_only_stream(bad)
        outcomes.add(stream is None)
        assert stream is None or stream.startswith(b"\xff\xd8")
        if k % 5 == 1:
            img = decode_dc_only(bad)
            assert img is None or img.size == (10, 8)
    assert outcomes == {True, False}


# -- load_image uses the DC path for large progressive JPEGs ------------------------------------
def _file(tmp_path, name, arr, **save):
    path = tmp_path / name
    path.write_bytes(_jpeg(arr, **save))
    return path


def test_load_image_takes_the_dc_path_only_where_it_is_large_enough(tmp_path):
    from vistrain.imageio.read import load_image
    arr = _rgb(160, 208)  # 1/8 scale: 26 x 20, which covers 8/7 * 16 = 18.3
    prog = _file(tmp_path, "p.jpg", arr, progressive=True, quality=90)
    img = load_image(prog, min_side=16)
    assert img.size == (26, 20) and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), _draft8(prog.read_bytes()))
    # baseline file: the usual draft, never below 1/4
    baseline = _file(tmp_path, "b.jpg", arr, progressive=False, quality=90)
    assert load_image(baseline, min_side=16).size == (52, 40)
    # progressive, but 1/8 would fall short of 8/7 * 24 = 27.4: the usual draft (1/4)
    assert load_image(prog, min_side=24).size == (52, 40)
    assert load_image(prog).size == (208, 160)  # no min_side: full decode


def test_load_image_dc_path_applies_exif_orientation(tmp_path):
    from vistrain.imageio.read import load_image
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: displayed 90 degrees clockwise
    path = _file(tmp_path, "r.jpg", _rgb(160, 208), progressive=True, quality=90, exif=exif.tobytes())
    img = load_image(path, min_side=16)
    assert img.size == (20, 26)
    assert np.array_equal(np.asarray(img), np.rot90(_draft8(path.read_bytes()), k=-1))
