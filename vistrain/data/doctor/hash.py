"""Hashes that find duplicate pictures: sha256 of the bytes and a perceptual hash (pHash).

Perceptual hash: grey, 32x32 (PIL box-antialiased bilinear), 2-D DCT-II (NumPy matrix product),
the 8x8 lowest frequencies, one bit per coefficient: above the median of the 63 non-DC
coefficients.  Re-encoding, resizing and mild brightness changes move a few bits; different photos
differ in ~32.  A pair within ``NEAR_DUP_DISTANCE`` bits is only a candidate: pHash alone matches
many distinct but similar pictures (centred objects on black), so the doctor confirms it with the
16x16 grey thumbnails (:func:`thumb_distance` <= ``NEAR_DUP_MAD``).

Example:
    >>> from PIL import Image
    >>> rng = np.random.default_rng(0)
    >>> img = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((96, 80))
    >>> h, thumb = phash_and_thumb(img)
    >>> hamming(h, phash(img.resize((48, 40)))) <= 4, len(thumb)
    (True, 256)
    >>> near_pairs([h, h ^ 0b111, ~h & (2**64 - 1)], max_distance=10)
    [(0, 1, 3)]
"""
from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
from PIL import Image

NEAR_DUP_DISTANCE = 10       # pHash Hamming distance (of 64 bits) that makes a candidate pair
NEAR_DUP_MAD = 6.0           # ... confirmed when the 16x16 grey thumbnails differ by <= this (mean abs, 0..255)
HASH_SIZE = 32               # pHash: grey image side before the DCT
HASH_BITS_SIDE = 8           # pHash: 8x8 low-frequency block -> 64 bits


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: ``D @ x`` is the DCT of the column vector ``x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


_DCT = _dct_matrix(HASH_SIZE)


def phash(img: Image.Image) -> int:
    """64-bit perceptual hash of a PIL image (module docstring)."""
    return phash_and_thumb(img)[0]


def phash_and_thumb(img: Image.Image) -> tuple[int, bytes]:
    """pHash and the 16x16 grey thumbnail (256 bytes) that confirms a near-duplicate candidate."""
    grey = img.convert("L").resize((HASH_SIZE, HASH_SIZE), Image.Resampling.BILINEAR)
    g = np.asarray(grey, dtype=np.float64)
    coeffs = (_DCT @ g @ _DCT.T)[:HASH_BITS_SIDE, :HASH_BITS_SIDE].ravel()
    bits = coeffs > np.median(coeffs[1:])
    thumb = g.reshape(16, 2, 16, 2).mean(axis=(1, 3))
    return int(np.packbits(bits).view(">u8")[0]), np.rint(thumb).astype(np.uint8).tobytes()


def thumb_distance(a: bytes, b: bytes) -> float:
    return float(np.abs(np.frombuffer(a, np.uint8).astype(np.int16)
                        - np.frombuffer(b, np.uint8).astype(np.int16)).mean())


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def near_pairs(hashes: list[int], max_distance: int = NEAR_DUP_DISTANCE,
               block: int = 512) -> list[tuple[int, int, int]]:
    """All ``(i, j, distance)`` with ``i < j`` and Hamming distance <= ``max_distance``.

    Vectorised all-pairs comparison in row blocks (O(N²) popcounts, O(block·N) memory).
    """
    h = np.asarray(hashes, dtype=np.uint64)
    out = []
    for start in range(0, len(h), block):
        rows = h[start:start + block]
        dist = np.bitwise_count(rows[:, None] ^ h[None, :])
        ii, jj = np.nonzero(dist <= max_distance)
        for i, j in zip(ii + start, jj):
            if i < j:
                out.append((int(i), int(j), int(dist[i - start, j])))
    return out


def exact_pairs(digests: list[str | None]) -> list[tuple[int, int, int]]:
    """``(i, j, 0)`` for each file ``j`` with the digest of an earlier file ``i`` (the first of
    its group); ``None`` digests (unreadable files) pair with nothing."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(digests):
        if h is not None:
            by_hash[h].append(i)
    return [(g[0], j, 0) for g in by_hash.values() if len(g) > 1 for j in g[1:]]
