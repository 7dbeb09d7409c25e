"""``vistrain pack DATA --out SHARDS``: the folder as WebDataset shards (for data sets larger
than the pixel cache)."""
from __future__ import annotations

from vistrain.cli.common import job, print_json


def register(sub) -> None:
    p = sub.add_parser("pack", help="write an image folder as WebDataset tar shards",
                       description="Write DATA as WebDataset shards (shard-000000.tar, ...) and an "
                                   "index.json (classes, counts, the train/val/test part of every "
                                   "sample, sha256 of every source file and shard). Images are "
                                   "shrunk to the training source size (shorter side; never "
                                   "enlarged) and stored as PNG, or JPEG for JPEG sources. The "
                                   "parts are the split training makes with the same fractions "
                                   "and seed. Small images are gzipped (shard-000000.tar.gz): "
                                   "tar's 512-byte headers would double them. For data sets "
                                   "larger than the pixel cache.")
    p.add_argument("data", help="image folder: DATA/<class>/<image> or DATA/{train,val,test}/<class>/")
    p.add_argument("--out", required=True, metavar="SHARDS",
                   help="folder to write (new, empty, or a shard folder with --overwrite)")
    p.add_argument("--size", type=int,
                   help="shorter side at most this many pixels; 0 = native size (default: the "
                        "model's train source size, 256 for tf_efficientnet_lite0: 224 / 0.875)")
    p.add_argument("--model", help="take the default --size from this model")
    p.add_argument("--encoding", choices=("auto", "png", "jpeg"), default="auto",
                   help="auto: JPEG sources stay JPEG, everything else PNG (lossless)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (1-100)")
    p.add_argument("--compress", choices=("auto", "none", "gzip"), default="auto",
                   help="gzip: .tar.gz shards (seekable: a full flush every 64 samples); auto: "
                        "gzip when the mean encoded image is under 16 KB, where tar's headers "
                        "dominate, else none")
    p.add_argument("--shard-mb", type=float, default=256, help="size of one shard in MiB")
    p.add_argument("--val-fraction", type=float, default=0.15, help="as in train")
    p.add_argument("--test-fraction", type=float, default=0.15, help="as in train")
    p.add_argument("--split-seed", type=int, default=0, help="as in train; also shuffles the samples")
    p.add_argument("--groups", metavar="FILE.csv", help="as in train: each group in one part only")
    p.add_argument("--group-regex", help="as in train")
    p.add_argument("--workers", type=int, default=-1, help="worker processes (-1: one per CPU)")
    p.add_argument("--overwrite", action="store_true", help="replace SHARDS if it is a shard folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    out = job("pack").pack(args.data, out=args.out, size=args.size, model=args.model,
                           encoding=args.encoding, quality=args.quality, shard_mb=args.shard_mb,
                           val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                           split_seed=args.split_seed, groups=args.groups,
                           group_regex=args.group_regex, workers=args.workers,
                           overwrite=args.overwrite, progress=not args.json,
                           compress=args.compress)
    if args.json:
        print_json(out)
        return 0
    parts = out["parts"]
    print(f"samples: {out['samples']} in {out['shards']} shard(s), {out['classes']} classes "
          f"(train {parts['train']}, val {parts['val']}, test {parts['test']})")
    print(f"size: shorter side at most {out['size']} px" if out["size"] else "size: native")
    print(f"encoding: {out['encoding']}")
    print(f"compress: {out['compress']}")
    print(f"bytes: {out['bytes'] / 1e6:.1f} MB of shards; source files {out['source_bytes'] / 1e6:.1f} MB "
          f"({out['ratio']:.2f}x), {out['source_disk_bytes'] / 1e6:.1f} MB on disk ({out['disk_ratio']:.2f}x)")
    print(f"skipped: {len(out['skipped'])} unreadable file(s)")
    for s in out["skipped"]:
        print(f"  {s['file']}: {s['reason']}")
    print(f"index: {out['index']}")
    return 0
