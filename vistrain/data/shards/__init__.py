"""WebDataset shards: the storage format for data sets larger than the pixel cache.

The pixel cache (:mod:`vistrain.data.cache`) stores every image decoded, ``C*S*S`` bytes each,
and is memory-mapped: ideal while it fits on the disk and, better, in the page cache.  Beyond
that, ``vistrain pack DATA --out SHARDS`` writes the images *encoded* (PNG, or JPEG for JPEG
sources), pre-shrunk to the training source size, into tar files of ~256 MB (gzipped,
``.tar.gz``, when the images are small) that are read sequentially and decoded on the fly by
worker processes.  Shards are read from local paths or fsspec URLs (``s3://bucket/shards/``,
``https://host/shards/shard-{000000..000009}.tar``, ``memory://...``).

The package has three modules:

* :mod:`~vistrain.data.shards.write`: :func:`write_shards` (an :class:`ImageIndex` -> shards +
  ``index.json``, atomically; unreadable files skipped and listed);
* :mod:`~vistrain.data.shards.index`: the format; :func:`read_shard_index` ->
  :class:`ShardIndex` (classes, counts per class and part, labels and parts by key, shards with
  bytes and sha256: everything a trainer needs without opening a shard), :func:`is_shard_folder`,
  :func:`is_shard_source` (shards rather than an image folder?), :func:`is_url`,
  :func:`expand_braces`, :func:`open_shard`;
* :mod:`~vistrain.data.shards.stream`: :class:`ShardBatches`, the streaming loader with
  :class:`~vistrain.data.loader.ArrayBatches`'s contract (uint8 ``(B, C, S, S)`` + int64 labels,
  ``set_epoch``, ``len``, rank/world_size, drop_last), a seeded shuffle buffer, a part filter and
  exact resume (``state_dict`` / ``load_state_dict``).

Example:
    >>> from vistrain.data.scan import scan_folder
    >>> from vistrain.data.shards.index import read_shard_index
    >>> from vistrain.data.shards.stream import ShardBatches
    >>> from vistrain.data.shards.write import write_shards
    >>> write_shards(scan_folder("examples/fashion-mnist-small"), "/tmp/fm")  # doctest: +SKIP
    >>> read_shard_index("/tmp/fm").counts("train")["Bag"]                    # doctest: +SKIP
    200
    >>> for x, y in ShardBatches("/tmp/fm", size=28, batch_size=64, part="train",
    ...                          shuffle=True, num_workers=2):                 # doctest: +SKIP
    ...     x.shape, x.dtype, y.dtype
    (torch.Size([64, 3, 28, 28]), torch.uint8, torch.int64)
"""
