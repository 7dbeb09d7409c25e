"""The key of a cache entry: a hash of the file list and of what was done to the files.

:func:`cache_key` hashes each file's path and fingerprint (:func:`file_fingerprint`: size, mtime
and a hash of its first and last 64 KiB, or of all its bytes with ``VISTRAIN_CACHE_STRICT=1``)
together with the preprocessing spec, ``DECODE_VERSION`` and ``KEY_VERSION``: adding, changing or
removing a file, changing the size or upgrading the decoder gives a new key, so a stale entry is
never found.  The fingerprints are remembered for the process (a run keys the same list several
times) and read by threads on a slow disk.

Example:
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "a.png"
    >>> _ = f.write_bytes(b"not really a png")
    >>> key = cache_key([f], {"size": 64})
    >>> len(key), key == cache_key([f], {"size": 64}) != cache_key([f], {"size": 32})
    (24, True)
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

# Bumped whenever decoding itself changes what pixels a file gives (2: DC-scan decode of large
# progressive JPEGs), so that caches built by an older vistrain are not reused.
DECODE_VERSION = 2
# Bumped whenever what the key hashes changes (3: each file's content fingerprint), so that
# entries keyed by an older, weaker rule are rebuilt rather than trusted.
KEY_VERSION = 3
# A file's fingerprint hashes its first and last FINGERPRINT_BLOCK bytes (all of a smaller file):
# an image re-encoded with other content changes there even at the same size (a PNG ends with
# its deflate checksum and CRC; a JPEG's entropy-coded data runs to its end).
FINGERPRINT_BLOCK = 64 * 1024
STRICT_ENV = "VISTRAIN_CACHE_STRICT"
SLOW_FILE_S = 0.5e-3  # fingerprinting slower than this a file: read the rest with threads


def strict_fingerprints(strict: bool | None = None) -> bool:
    """``strict`` if given, else ``$VISTRAIN_CACHE_STRICT`` (1/true/yes/on): hash every byte of
    every file for the cache key instead of its first and last blocks."""
    if strict is not None:
        return bool(strict)
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# (path, device, inode, size, mtime, ctime, strict) -> fingerprint, for this process: a run keys the
# same file list several times.  ctime is in the memo key (any write, rename or utime changes it)
# but not in the cache key, which must survive copying the data set elsewhere.
_FINGERPRINTS: dict[tuple, str] = {}
FINGERPRINT_MEMO_MAX = 2_000_000  # ~0.5 GB of memo at most


def file_fingerprint(path, strict: bool = False) -> str:
    """``"<size>:<mtime_ns>:<hash>"`` of a file's first and last FINGERPRINT_BLOCK bytes, or of
    all its bytes when ``strict``.  Raises OSError when the file cannot be read."""
    st = os.stat(path)
    memo = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, strict)
    if memo in _FINGERPRINTS:
        return _FINGERPRINTS[memo]
    return _hash_file(path, st, memo, strict)


def _hash_file(path, st: os.stat_result, memo: tuple, strict: bool) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if strict or st.st_size <= 2 * FINGERPRINT_BLOCK:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            h.update(f.read(FINGERPRINT_BLOCK))
            f.seek(-FINGERPRINT_BLOCK, os.SEEK_END)
            h.update(f.read(FINGERPRINT_BLOCK))
    fingerprint = f"{st.st_size}:{st.st_mtime_ns}:{h.hexdigest()[:32]}"
    if len(_FINGERPRINTS) >= FINGERPRINT_MEMO_MAX:  # a long notebook session over many data sets
        _FINGERPRINTS.clear()
    _FINGERPRINTS[memo] = fingerprint
    return fingerprint


def _fingerprints(paths: list[str], strict: bool) -> list[str]:
    """:func:`file_fingerprint` of each path (``"missing"`` when unreadable).  Files not seen
    before in this process are read serially while that is fast (page cache: ~40 us a file, where
    threads only add overhead), by 8 threads once the first 64 show a slow disk or network share,
    whose waits the threads overlap."""
    prints: list[str | None] = [None] * len(paths)
    todo = []
    for i, p in enumerate(paths):
        try:
            st = os.stat(p)
        except OSError:
            prints[i] = "missing"
            continue
        memo = (p, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, strict)
        prints[i] = _FINGERPRINTS.get(memo)
        if prints[i] is None:
            todo.append((i, p, st, memo))

    def one(job):
        i, p, st, memo = job
        try:
            return _hash_file(p, st, memo, strict)
        except OSError:
            return "missing"
    t = time.perf_counter()
    done = [one(job) for job in todo[:64]]
    if len(todo) > 64 and time.perf_counter() - t > 64 * SLOW_FILE_S:
        with ThreadPoolExecutor(8) as pool:
            done += pool.map(one, todo[64:], chunksize=16)
    else:
        done += [one(job) for job in todo[64:]]
    for (i, *_), fingerprint in zip(todo, done):
        prints[i] = fingerprint
    return prints


def cache_key(paths, spec: dict, *, strict: bool | None = None) -> str:
    """Hash of the file list (path + :func:`file_fingerprint`), the preprocessing spec,
    DECODE_VERSION and KEY_VERSION.  ``strict`` (default ``$VISTRAIN_CACHE_STRICT``) fingerprints
    every byte of every file; a strict key differs from a default one."""
    strict = strict_fingerprints(strict)
    h = hashlib.sha256(json.dumps({"decode_version": DECODE_VERSION, "key_version": KEY_VERSION,
                                   "strict": strict, **spec}, sort_keys=True, default=str).encode())
    paths = [str(p) for p in paths]
    for p, fingerprint in zip(paths, _fingerprints(paths, strict)):
        # surrogateescape: a name that is not UTF-8 (os.fsdecode's surrogates) hashes as its bytes
        h.update(f"{p}\0{fingerprint}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:24]
