"""Decode every image once into a memory-mapped array of resized uint8 pixels: the pixel cache.

Decoding a JPEG costs far more than augmenting its pixels, and a CPU-bound training run decodes
every image every epoch in the usual torchvision recipe.  Here each image is decoded, EXIF-rotated,
converted and resized **once** (in parallel worker processes, with a progress bar) into
``(N, C, S, S)`` uint8 stored as a ``.npy`` file that later epochs and later runs memory-map.

The cache is six modules, one concern each:

* :mod:`~vistrain.data.cache.fingerprint`: the key, a hash of the file list (path, size, mtime
  and each file's first and last 64 KiB, or all its bytes with ``VISTRAIN_CACHE_STRICT=1``) and
  the preprocessing: adding, changing or removing a file, or changing the size, builds a new cache;
* :mod:`~vistrain.data.cache.entry`: one entry on disk, a ``.npy`` array with a JSON sidecar of
  its shape, size and a CRC-32 per block of rows, checked (sampled for large entries) when opened:
  a truncated, overwritten or mis-shaped entry is deleted and rebuilt with a warning, never used;
* :mod:`~vistrain.data.cache.build`: building pixel caches (free space checked and the file's
  blocks reserved first, so a full disk is one line naming the folder, not a SIGBUS);
* :mod:`~vistrain.data.cache.decode`: decoding in watched worker processes (unreadable files are
  reported as ``(path, reason)``, a worker that dies ends the build with one line);
* :mod:`~vistrain.data.cache.budget`: where the caches live, the size budget (LRU eviction) and
  the free-space check;
* :mod:`~vistrain.data.cache.pixels`: :class:`EvalAndTrainPixels`, the eval crop and a larger
  train square from one decode.

Every file is written under a temporary ``.part`` name and moved into place with ``os.replace``
(:func:`vistrain.fsutil.atomic_path`).

Example:
    >>> from vistrain.data.cache.build import build_pixel_cache
    >>> from vistrain.transforms.preprocess import Preprocess
    >>> pixels, bad = build_pixel_cache(paths, Preprocess(size=64).pixels, (3, 64, 64))  # doctest: +SKIP
    >>> pixels.shape                                                                   # doctest: +SKIP
    (1500, 3, 64, 64)
"""
