"""Fast 1/8-scale decode of progressive JPEGs from their DC scans only.

Why: a progressive JPEG stores its DCT coefficients in several *scans*: libjpeg's default
script (used by PIL, cameras' libjpeg-based exporters, ``jpegtran -progressive``) writes the DC
coefficients of all components with Al=1, then five AC scans, then a DC refinement (Ah=1, Al=0),
then three AC refinements.  ``img.draft("RGB", (w // 8, h // 8))`` makes libjpeg decode at 1/8
scale, where a 1x1 inverse DCT uses only each block's DC coefficient -- but libjpeg still
entropy-decodes every AC scan first, and that dominates: decoding a progressive 16 MB photo at
1/8 takes as long as at 1/4.  :func:`dc_only_stream` rewrites the file into a complete JPEG
stream that keeps every marker segment (APPn, DQT, SOF2, DHT, DRI, COM, ...) and only the
scans with spectral selection ``Ss == Se == 0`` (DC first and refinement scans), so libjpeg
never sees the AC data (7-14x faster on 8-16 MB photos, see ``benchmarks/jpeg_dc.py``).
Nothing is truncated: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is not needed.

Two libjpeg details make the result bit-identical to the full file decoded at draft 1/8:

* **Block smoothing.**  When a progressive image lacks all AC data, libjpeg-turbo >= 2.1
  replaces each DC coefficient by a 5x5 weighted mean of its neighbours (a preview feature),
  which blurs the 1/8 image (up to ~60 grey levels at edges).  Setting quantizer 1 of the
  DC-only components' DQT tables to 0 disables smoothing (libjpeg skips it to avoid dividing by
  zero); no pixel reads that quantizer, since the AC coefficients are all 0.
* **4:2:0 chroma** is decoded by libjpeg with a 2x2 IDCT at 1/8 scale (scaling up through the
  IDCT instead of upsampling), which reads AC coefficients.  Those chroma AC scans are kept
  (``exact=True``; 1.5-2x the DC-only stream on photos); ``exact=False`` drops them too
  (flat 2x2 chroma blocks: mean 1-3 grey levels off the 1/8 decode in RGB, up to ~65 at
  colour edges, on two 4:2:0 photos).
  4:4:4, 4:2:2 and grayscale need DC only; luma is always DC only.

Baseline (SOF0/SOF1), lossless, hierarchical and arithmetic-coded JPEGs give ``None``: their
scans interleave DC and AC coefficients, so there is nothing to drop; callers then decode the file
normally.

Example:
    >>> import io
    >>> import numpy as np
    >>> from PIL import Image
    >>> from vistrain.imageio.jpeg import SOS, dc_only_stream, decode_dc_only, jpeg_scans
    >>> rgb = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    >>> buf = io.BytesIO()
    >>> Image.fromarray(rgb).save(buf, "JPEG", progressive=True, quality=90)
    >>> data = buf.getvalue()
    >>> [(s.components, s.ss, s.se, s.ah, s.al) for s in jpeg_scans(data) if s.marker == SOS][:2]
    [((1, 2, 3), 0, 0, 0, 1), ((1,), 1, 5, 0, 2)]
    >>> len(dc_only_stream(data)) < len(data) // 2
    True
    >>> img = decode_dc_only(data)       # == Image.open(buf) + draft("RGB", (25, 18)) + load()
    >>> img.size, img.mode               # ceil(200 / 8), ceil(150 / 8)
    ((25, 19), 'RGB')
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

SOI, EOI, SOS, SOF2, DQT, APP2 = 0xD8, 0xD9, 0xDA, 0xC2, 0xDB, 0xE2
# Start-of-frame markers: C0..CF except DHT (C4), JPG (C8) and DAC (CC).
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field besides SOI/EOI: TEM and RST0..RST7.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_FILL = re.compile(rb"\xff+")


class Segment(NamedTuple):
    """One marker segment of a JPEG file, ``data[start:end]``.

    For SOS, ``end`` is past the scan's entropy-coded data (RSTn markers included) and
    ``components``/``ss``/``se``/``ah``/``al`` are the scan's component ids, spectral selection
    and successive-approximation bits.  For SOFn, ``components`` are the frame's component ids.
    """
    marker: int                       # second marker byte: 0xD8 SOI, 0xC2 SOF2, 0xDA SOS, ...
    start: int                        # offset of the marker's 0xFF (after any fill bytes)
    end: int                          # one past the segment
    components: tuple[int, ...] = ()
    ss: int = 0
    se: int = 0
    ah: int = 0
    al: int = 0

    @property
    def is_dc_scan(self) -> bool:
        """A scan carrying only DC coefficients (first or refinement)."""
        return self.marker == SOS and self.ss == 0 and self.se == 0


def jpeg_scans(data: bytes) -> list[Segment]:
    """Parse the marker structure of a JPEG file, SOI to EOI, without decoding any scan.

    Args:
        data: the whole file (bytes of length N).

    Returns:
        every marker segment in file order (SOI first, EOI last); entropy-coded data belongs to
        the SOS segment before it.  Bytes after EOI are ignored.  Takes ~5 ms for 16 MB: the
        ends of all entropy-coded segments are found with one numpy pass (:func:`_marker_offsets`),
        not a Python loop over bytes.

    Raises:
        ValueError: not a JPEG, a bad segment length, or no EOI (truncated file).
    """
    n = len(data)
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG: no SOI marker")
    segs = [Segment(SOI, 0, 2)]
    pos = 2
    markers = None   # offsets of candidate markers after the first SOS, computed there
    while True:
        fill = _FILL.match(data, pos)
        if fill is None or fill.end() >= n:
            raise ValueError(f"expected a marker at byte {pos} (truncated or corrupt file)")
        start, marker, pos = fill.end() - 1, data[fill.end()], fill.end() + 1
        if marker == EOI:
            segs.append(Segment(EOI, start, pos))
            return segs
        if marker in _STANDALONE:
            segs.append(Segment(marker, start, pos))
            continue
        if marker in (0x00, SOI) or pos + 2 > n:
            raise ValueError(f"bad marker 0xFF{marker:02X} at byte {start}")
        end = pos + int.from_bytes(data[pos:pos + 2], "big")
        if end <= pos + 1 or end > n:
            raise ValueError(f"bad length of marker 0xFF{marker:02X} at byte {start}")
        if marker == SOS:
            markers = _marker_offsets(data, end) if markers is None else markers
            segs.append(_sos(data, start, pos, end, markers))
            pos = segs[-1].end
        elif marker in SOF_MARKERS:
            ncomp = data[pos + 7] if pos + 8 <= end else 0
            if end != pos + 8 + 3 * ncomp or ncomp == 0:
                raise ValueError(f"bad SOF segment at byte {start}")
            segs.append(Segment(marker, start, end, tuple(data[pos + 8:end:3])))
            pos = end
        else:
            segs.append(Segment(marker, start, end))
            pos = end


def _marker_offsets(data: bytes, start: int) -> np.ndarray:
    """Sorted offsets p >= start where data[p] == 0xFF is not stuffing (0xFF00) nor RSTn.

    Inside entropy-coded data, the first such offset is where the data ends: the next marker
    or a fill byte 0xFF before it.  Shape (K,), int64; K ~ the number of segments after start.
    """
    a = np.frombuffer(data, np.uint8)[start:]
    ff = np.flatnonzero(a[:-1] == 0xFF)
    nxt = a[ff + 1]
    return ff[(nxt != 0) & ((nxt < 0xD0) | (nxt > 0xD7))] + start


def _sos(data: bytes, start: int, pos: int, end: int, markers: np.ndarray) -> Segment:
    """The SOS segment whose length field is at ``pos``, header ends at ``end``, data after."""
    ncomp = data[pos + 2]
    if end != pos + 6 + 2 * ncomp or ncomp == 0:
        raise ValueError(f"bad SOS header at byte {start}")
    i = int(np.searchsorted(markers, end))
    if i == len(markers):
        raise ValueError(f"scan at byte {start} has no end marker (truncated file)")
    a = data[end - 1]
    return Segment(SOS, start, int(markers[i]), tuple(data[pos + 3:end - 3:2]),
                   data[end - 3], data[end - 2], a >> 4, a & 15)


def dc_only_stream(data: bytes, exact: bool = True) -> bytes | None:
    """The stream of a progressive JPEG without its AC scans, for decoding at 1/8 scale only.

    Kept: every marker segment (except an APP2 "MPF" index, whose offsets would point past the
    new EOI), every DC scan (``Ss == Se == 0``, first and refinement), and -- when ``exact`` --
    the AC scans of components that libjpeg decodes at 2x2 per block at 1/8 scale (chroma of
    4:2:0 files, see :func:`_upscaled_components`).  Quantizer 1 of the tables of DC-only
    components is set to 0 (:func:`_patch_dqt`), which turns off libjpeg's block smoothing:
    with no AC data at all, libjpeg-turbo >= 2.1 otherwise blurs every DC coefficient with a
    5x5 kernel of its neighbours (up to ~60 grey levels off at edges).

    Args:
        data: the whole file (N bytes).
        exact: keep the AC scans that the 1/8-scale decode of the full file uses, so the decode
            is bit-identical to it; False drops them too (4:2:0 chroma then becomes flat 2x2
            blocks: faster, mean 1-3 grey levels off in RGB).

    Returns:
        a complete JPEG of M << N bytes, or None when ``data`` is not a single-frame Huffman
        progressive JPEG (SOF2) whose DC scans cover all components, cannot be parsed, or (only
        if ``exact``) shares a quantization table between a DC-only and a kept component.
        Never raises on malformed input.
    """
    try:
        segs = jpeg_scans(data)
        frames = [s for s in segs if s.marker in SOF_MARKERS]
        if len(frames) != 1 or frames[0].marker != SOF2:
            return None
        comps = _frame_components(data, frames[0])
        if not comps.keys() <= {c for s in segs if s.is_dc_scan and s.ah == 0
                                for c in s.components}:
            return None
        keep_ac = _upscaled_components(comps) if exact else set()
        dc_tables = {tq for c, (_, _, tq) in comps.items() if c not in keep_ac}
        if dc_tables & {comps[c][2] for c in keep_ac}:
            return None
        out = []
        for s in segs:
            if s.marker == SOS and not s.is_dc_scan and not set(s.components) <= keep_ac:
                continue
            if s.marker == APP2 and data[s.start + 4:s.start + 8] == b"MPF\x00":
                continue
            seg = data[s.start:s.end]
            out.append(_patch_dqt(seg, dc_tables) if s.marker == DQT else seg)
        return b"".join(out)
    except (ValueError, IndexError, KeyError):
        return None


def _frame_components(data: bytes, sof: Segment) -> dict[int, tuple[int, int, int]]:
    """Component id -> (h sampling factor, v sampling factor, quantization table id)."""
    body = data[sof.start + 10:sof.end]
    return {body[i]: (body[i + 1] >> 4, body[i + 1] & 15, body[i + 2])
            for i in range(0, len(body), 3)}


def _upscaled_components(comps: dict[int, tuple[int, int, int]]) -> set[int]:
    """Components that libjpeg decodes at 2x2 (or more) pixels per block at 1/8 scale.

    libjpeg (jdmaster.c) scales a subsampled component up through its IDCT rather than by
    upsampling when both its h and v factors divide the maxima by 2: ``ssize`` doubles while
    ``max_h % (h * ssize * 2) == 0 and max_v % (v * ssize * 2) == 0``.  So 4:2:0 chroma is
    decoded with a 2x2 IDCT, which reads AC coefficients; 4:4:4, 4:2:2 and 4:4:0 use 1x1 (DC).
    """
    max_h = max(h for h, _, _ in comps.values())
    max_v = max(v for _, v, _ in comps.values())
    return {c for c, (h, v, _) in comps.items() if max_h % (2 * h) == 0 and max_v % (2 * v) == 0}


def _patch_dqt(seg: bytes, tables: set[int]) -> bytes:
    """The DQT segment ``seg`` with quantizer 1 (zigzag order) of ``tables`` set to 0.

    libjpeg's smoothing_ok() (jdcoefct.c) disables block smoothing when any component's
    quantizers 0..9 contain a 0.  The AC coefficients of those components are all 0 in the
    reduced stream and the 1x1 IDCT reads only the DC quantizer, so no pixel depends on it.
    """
    out = bytearray(seg)
    i = 4
    while i < len(out):
        n = 1 + (out[i] >> 4)   # bytes per quantizer: 1 (8-bit table) or 2 (16-bit)
        if n > 2 or i + 1 + 64 * n > len(out):
            raise ValueError("bad DQT segment")
        if out[i] & 15 in tables:
            out[i + 1 + n:i + 1 + 2 * n] = bytes(n)
        i += 1 + 64 * n
    return bytes(out)


def decode_dc_only(src: str | Path | bytes, mode: str = "RGB", exact: bool = True,
                   ) -> Image.Image | None:
    """Decode a progressive JPEG at 1/8 scale from its DC scans (see :func:`dc_only_stream`).

    Args:
        src: a file path or the file's bytes.
        mode: PIL draft mode: "RGB", or "L" for the luma of a YCbCr JPEG (libjpeg then ignores
            the chroma, so ``exact=False`` is exact too).  Grayscale stays "L", CMYK "CMYK".
        exact: bit-identical to ``Image.open(src)`` + ``draft(mode, (W // 8, H // 8))`` +
            ``load()``; False is faster for 4:2:0 files, with approximate chroma.

    Returns:
        a loaded PIL image of size (ceil(W / 8), ceil(H / 8)) for a W x H progressive JPEG,
        in the mode PIL decodes to (EXIF orientation not applied); None when the file is not a
        progressive JPEG, is corrupt, or W or H < 8 (no 1/8 scale), so the caller decodes it
        normally.

    Raises:
        OSError: ``src`` is a path that cannot be read.
        PIL.Image.DecompressionBombError: as ``Image.open`` (W x H is the full size).
    """
    data = src if isinstance(src, bytes) else Path(src).read_bytes()
    stream = dc_only_stream(data, exact=exact)
    if stream is None:
        return None
    try:
        img = Image.open(io.BytesIO(stream), formats=["JPEG"])
        w, h = img.size   # the full size from SOF2; draft reduces it
        img.draft(mode, (max(1, w // 8), max(1, h // 8)))
        if img.size != (-(-w // 8), -(-h // 8)):
            return None   # not decoded at 1/8: the missing AC coefficients would show
        img.load()
    except (OSError, ValueError, SyntaxError):
        return None
    return img
