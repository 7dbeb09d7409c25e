"""``vistrain cache``: what the pixel / feature / statistics caches hold; verifying, clearing them."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("cache", help="show, verify or clear vistrain's caches",
                       description="Show the size of vistrain's caches (decoded pixels, backbone "
                                   "features, data-set statistics) under $VISTRAIN_CACHE or "
                                   "~/.cache/vistrain. They are rebuilt on demand, so clearing "
                                   "loses no work. The total is kept under $VISTRAIN_CACHE_MAX_GB "
                                   "(default 20; 0 = no limit) by evicting the least recently used "
                                   "entries whenever a new one is written.")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--clear", action="store_true", help="delete every cache entry")
    act.add_argument("--prune", action="store_true",
                     help="evict least recently used entries down to the limit now")
    act.add_argument("--verify", action="store_true",
                     help="check every block of every entry against its checksums and delete "
                          "damaged entries (they are rebuilt when next needed); exit status 1 if "
                          "any was damaged")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from vistrain.cli.common import print_json
    from vistrain.data.cache import (cache_entries, cache_limit_bytes, default_cache_dir,
                                     prune_cache, verify_cache)
    root = default_cache_dir()
    removed, verified = [], None
    if root.is_dir() and (args.clear or args.prune):
        removed = prune_cache(root, limit_bytes=0 if args.clear else -1)
    if getattr(args, "verify", False):
        verified = verify_cache(root) if root.is_dir() else (0, [])
    entries = cache_entries(root) if root.is_dir() else []
    limit = cache_limit_bytes()
    kinds: dict[str, list[int]] = {}
    for e in entries:
        k = kinds.setdefault("partial" if e.partial else e.name.split("-", 1)[0], [0, 0])
        k[0] += 1
        k[1] += e.size
    status = 1 if verified and verified[1] else 0
    if args.json:
        doc = {"root": str(root), "limit_bytes": limit, "total_bytes": sum(e.size for e in entries),
               "entries": {k: {"count": c, "bytes": b} for k, (c, b) in kinds.items()},
               "removed": [{"name": e.name, "bytes": e.size} for e in removed]}
        if verified is not None:
            doc["verified"] = {"checked": verified[0], "damaged": [
                {"file": str(f), "reason": r} for f, r in verified[1]]}
        print_json(doc)
        return status
    if removed:
        print(f"removed {len(removed)} entries ({sum(e.size for e in removed) / 1e9:.2f} GB)")
    if verified is not None:
        checked, damaged = verified
        print(f"verified {checked} files: " + (f"{len(damaged)} damaged, deleted (rebuilt when next "
                                                "needed)" if damaged else "all intact"))
        for f, reason in damaged:
            print(f"  damaged: {f}: {reason}")
    total = sum(e.size for e in entries)
    print(f"{root}: {total / 1e9:.2f} GB in {len(entries)} entries; limit "
          + ("none" if limit is None else f"{limit / 1e9:g} GB") + " (VISTRAIN_CACHE_MAX_GB)")
    for k, (c, b) in sorted(kinds.items()):
        print(f"  {k:<9} {c:>5} entries {b / 1e9:>8.2f} GB")
    return status
