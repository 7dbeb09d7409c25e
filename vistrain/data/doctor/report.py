"""What the data doctor found: :class:`Finding`, the :class:`DoctorReport` and ``doctor.json``.

A finding has a severity (``error`` makes training unsound or impossible, ``warning`` deserves a
look, ``info`` is context), a code, a one-line message, every file involved and the fix.
:meth:`DoctorReport.format` is what ``vistrain doctor`` prints, :meth:`DoctorReport.to_dict` what
``--json`` prints; :func:`doctor_doc` is the ``doctor.json`` of a run's quick-check findings.

Example:
    >>> f = Finding("warning", "tiny", "2 image(s) under 16 px", ["a.png", "b.png"], "replace them")
    >>> print(f.format())
    [warning] tiny: 2 image(s) under 16 px
        fix: replace them
    >>> summarize([f])
    {'errors': 0, 'warnings': 1, 'info': 0, 'ok': True}
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from vistrain.data.doctor.hash import NEAR_DUP_DISTANCE, NEAR_DUP_MAD

MAX_LISTED = 5               # files named in a message (all of them are in ``paths``)
SEVERITIES = ("error", "warning", "info")


@dataclass
class Finding:
    """One problem: ``paths`` are every file or folder involved, ``fix`` says what to do."""
    severity: str            # error | warning | info
    code: str                # e.g. "empty-class", "truncated", "leakage"
    message: str
    paths: list[str] = field(default_factory=list)
    fix: str = ""

    def format(self) -> str:
        return f"[{self.severity}] {self.code}: {self.message}" + (f"\n    fix: {self.fix}" if self.fix else "")


def summarize(findings: list[Finding]) -> dict[str, int | bool]:
    """Number of findings per severity, and ``ok`` (no error)."""
    n = Counter(f.severity for f in findings)
    return {"errors": n["error"], "warnings": n["warning"], "info": n["info"], "ok": not n["error"]}


@dataclass
class DoctorReport:
    root: str
    classes: list[str]
    counts: dict[str, int]
    findings: list[Finding]
    sizes: dict = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    near_dup_distance: int = NEAR_DUP_DISTANCE

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def summary(self) -> dict:
        return {"images": sum(self.counts.values()), "classes": len(self.classes), **summarize(self.findings)}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["findings"] = sorted(d["findings"], key=lambda f: SEVERITIES.index(f["severity"]))
        d["summary"] = self.summary()
        d["ok"] = self.ok
        return d

    def format(self) -> str:
        lines = [f"{self.root}: {sum(self.counts.values())} images, {len(self.classes)} classes"]
        width = max(len(c) for c in self.classes) if self.classes else 0
        lines += [f"  {c:<{width}}  {self.counts[c]}" for c in self.classes]
        if self.sizes:
            s = self.sizes
            lines.append(f"sizes (w x h): min {s['min_w']}x{s['min_h']}, median {s['median_w']}x"
                         f"{s['median_h']}, max {s['max_w']}x{s['max_h']}; {s['n_distinct']} distinct")
        if self.modes:
            lines.append("modes: " + ", ".join(f"{m} {k}" for m, k in sorted(self.modes.items())))
        lines += [f.format() for sev in SEVERITIES for f in self.findings if f.severity == sev]
        s = summarize(self.findings)
        lines.append(f"{s['errors']} error(s), {s['warnings']} warning(s), {s['info']} note(s); "
                     f"near-duplicate = pHash Hamming distance <= {self.near_dup_distance} of 64 bits "
                     f"and 16x16 grey thumbnails within {NEAR_DUP_MAD:g} grey levels (mean abs)"
                     + ("; training is sound as far as these checks go" if s["ok"] else ""))
        return "\n".join(lines)


def listing(items, n: int = MAX_LISTED, sep: str = ", ") -> str:
    """``a, b, c and 4 more``: the first ``n`` of ``items``."""
    items = [str(i) for i in items]
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return sep.join(items[:n]) + more


def doctor_doc(findings: list[Finding]) -> dict:
    """The document of a run's ``doctor.json``: the findings and their summary (the report shows
    them).  Training writes it through its record (:class:`vistrain.rundir.DoctorRecord`)."""
    return {"source": "quick data checks before training (`vistrain doctor DATA` checks more)",
            "summary": summarize(findings), "findings": [asdict(f) for f in findings]}
