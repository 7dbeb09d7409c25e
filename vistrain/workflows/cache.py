"""``cache_info``: what vistrain's caches hold; verifying, pruning or clearing them.

Example:
    >>> import vistrain
    >>> info = vistrain.cache_info()                       # doctest: +SKIP
    >>> info["root"], info["total_bytes"] >= 0              # doctest: +SKIP
    ('/home/me/.cache/vistrain', True)
"""
from __future__ import annotations

from pathlib import Path

from vistrain import fsutil
from vistrain.data.cache.budget import cache_entries, cache_limit_bytes, default_cache_dir, prune_cache
from vistrain.data.cache.entry import verify_cache
from vistrain.errors import VistrainError


def cache_info(*, clear: bool = False, prune: bool = False, verify: bool = False) -> dict:
    """The caches under ``$VISTRAIN_CACHE`` (or ``~/.cache/vistrain``), after the action asked.

    Only files vistrain recorded in the cache's index are counted or deleted, and ``clear``,
    ``prune`` and ``verify`` refuse (one line, nothing deleted) a folder without vistrain's cache
    marker: ``$VISTRAIN_CACHE`` may point at a folder holding other files.
    ``clear`` deletes every entry, ``prune`` evicts least recently used entries down to the
    limit (``$VISTRAIN_CACHE_MAX_GB``), ``verify`` checks every block against its checksums and
    deletes damaged entries (rebuilt when next needed). Returns ``{"root", "limit_bytes" (None:
    no limit), "total_bytes", "entries": {kind: {"count", "bytes"}}, "removed": [{"name",
    "bytes"}]}`` plus ``"verified": {"checked", "damaged": [{"file", "reason"}]}`` with ``verify``.
    """
    if clear and prune:
        raise ValueError("give clear or prune, not both")
    root = default_cache_dir()
    if (clear or prune or verify) and root.is_dir():
        check_cache_root(root)
    removed = prune_cache(root, limit_bytes=0 if clear else -1) if root.is_dir() and (clear or prune) else []
    # verify first: it deletes damaged entries, which the listing then leaves out
    verified = (verify_cache(root) if root.is_dir() else (0, [])) if verify else None
    entries = cache_entries(root) if root.is_dir() else []
    kinds: dict[str, dict[str, int]] = {}
    for e in entries:
        kind = kinds.setdefault("partial" if e.partial else e.name.split("-", 1)[0], {"count": 0, "bytes": 0})
        kind["count"] += 1
        kind["bytes"] += e.size
    info = {"root": str(root), "limit_bytes": cache_limit_bytes(),
            "total_bytes": sum(e.size for e in entries), "entries": kinds,
            "removed": [{"name": e.name, "bytes": e.size} for e in removed]}
    if verified is not None:
        info["verified"] = {"checked": verified[0],
                            "damaged": [{"file": str(f), "reason": r} for f, r in verified[1]]}
    return info


def check_cache_root(root: Path) -> None:
    """Refuse to delete anything in ``root`` unless it carries vistrain's cache marker."""
    if fsutil.vistrain_output_kind(root) != "cache":
        raise VistrainError(f"{root}: not a cache folder vistrain created (no {fsutil.MARKER} of kind "
                            "cache), so vistrain deletes nothing there; point VISTRAIN_CACHE at a "
                            "folder of its own, or delete old cache files yourself")
