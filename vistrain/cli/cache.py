"""``vistrain cache``: what the pixel / feature / statistics caches hold; verifying, clearing them."""
from __future__ import annotations

from vistrain.cli.common import job, print_json


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
    info = job("cache").cache_info(clear=args.clear, prune=args.prune, verify=args.verify)
    verified = info.get("verified")
    status = 1 if verified and verified["damaged"] else 0
    if args.json:
        print_json(info)
        return status
    removed = info["removed"]
    if removed:
        print(f"removed {len(removed)} entries ({sum(e['bytes'] for e in removed) / 1e9:.2f} GB)")
    if verified is not None:
        damaged = verified["damaged"]
        print(f"verified {verified['checked']} files: " + (
            f"{len(damaged)} damaged, deleted (rebuilt when next needed)" if damaged else "all intact"))
        for d in damaged:
            print(f"  damaged: {d['file']}: {d['reason']}")
    limit, count = info["limit_bytes"], sum(k["count"] for k in info["entries"].values())
    print(f"{info['root']}: {info['total_bytes'] / 1e9:.2f} GB in {count} entries; limit "
          + ("none" if limit is None else f"{limit / 1e9:g} GB") + " (VISTRAIN_CACHE_MAX_GB)")
    for kind, k in sorted(info["entries"].items()):
        print(f"  {kind:<9} {k['count']:>5} entries {k['bytes'] / 1e9:>8.2f} GB")
    return status
