"""The plain-text table of one evaluation: headline metrics with their 95% CIs, then per class.

``vistrain evaluate`` and ``vistrain train`` print :func:`format_table` of the
:func:`~vistrain.evaluation.metrics.compute_metrics` dict; :func:`fmt` writes a metric the way
every table here does (4 decimals, ``-`` when undefined).

Example:
    >>> fmt(0.123456), fmt(None)
    ('0.1235', '-')
"""
from __future__ import annotations


def fmt(value, digits=4):
    """``value`` with ``digits`` decimals; ``-`` for None (undefined)."""
    return "-" if value is None else f"{value:.{digits}f}"


def _fmt_ci(ci):
    if not ci or ci.get("low") is None:
        return ""
    return f"  95% CI [{fmt(ci['low'])}, {fmt(ci['high'])}]"


def _headline_rows(m):
    """(label, value, ci) for the summary lines of format_table."""
    auc = m["auc_roc"]
    auc_label = (f"AUC-ROC ({auc['positive_class']})" if auc["method"] == "binary"
                 else "AUC-ROC (macro OvR)")
    rows = [("accuracy", m["accuracy"], m["ci95"]["accuracy"]),
            ("balanced accuracy", m["balanced_accuracy"], m["ci95"]["balanced_accuracy"]),
            ("macro F1", m["macro"]["f1"], m["ci95"]["macro_f1"]),
            (auc_label, auc["value"], m["ci95"]["macro_auc_roc"])]
    if auc["method"] == "ovr":
        rows.append(("AUC-ROC (weighted OvR)", auc["weighted"], None))
    rows += [(f"top-{k} accuracy", v, None) for k, v in m["top_k_accuracy"].items() if k != "1"]
    rows.append((f"ECE ({len(m['reliability']['count'])} bins)", m["ece"], m["ci95"].get("ece")))
    return rows


def format_table(metrics: dict) -> str:
    """Plain-text report of a :func:`compute_metrics` dict: headline metrics with 95% CIs, then
    one aligned row per class and the macro / weighted averages.  ``-`` marks undefined values.

    Example::

        >>> from vistrain.evaluation.metrics import compute_metrics
        >>> m = compute_metrics([0, 1, 1, 0], [[.8, .2], [.3, .7], [.6, .4], [.9, .1]],
        ...                     ["neg", "pos"], n_bootstrap=0)
        >>> print(format_table(m))  # doctest: +ELLIPSIS
        4 samples, 2 classes
        ...
    """
    m = metrics
    head = f"{m['n_samples']} samples, {m['n_classes']} classes"
    if m["absent_classes"]:
        head += ("; absent from the labels (excluded from macro averages): "
                 + ", ".join(m["absent_classes"]))
    rows = _headline_rows(m)
    width = max(len(label) for label, _, _ in rows)
    lines = [head] + [f"  {label:<{width}}  {fmt(v)}{_fmt_ci(ci)}" for label, v, ci in rows]
    if m["auc_roc"]["reason"]:
        lines.append(f"  AUC-ROC undefined: {m['auc_roc']['reason']}")

    def clip(name):  # keep very long class names from wrecking the alignment
        return name if len(name) <= 32 else name[:31] + "~"

    names = [clip(r["class"]) for r in m["per_class"]]
    cw = max([len(n) for n in names] + [len("weighted avg")])
    cols = ("support", "predicted", "precision", "recall", "f1", "auc_roc")
    lines += ["", f"{'class':<{cw}}  " + "  ".join(f"{c:>9}" for c in cols)]
    lines.append("-" * len(lines[-1]))
    for name, r in zip(names, m["per_class"]):
        cells = [str(r["support"]), str(r["n_predicted"])] + [
            fmt(r[c]) for c in ("precision", "recall", "f1", "auc_roc")]
        lines.append(f"{name:<{cw}}  " + "  ".join(f"{c:>9}" for c in cells))
    lines.append("-" * len(lines[-1]))
    for avg in ("macro", "weighted"):
        a = m[avg]
        cells = [str(m["n_samples"]), ""] + [fmt(a[c]) for c in ("precision", "recall", "f1",
                                                                  "auc_roc")]
        lines.append(f"{avg + ' avg':<{cw}}  " + "  ".join(f"{c:>9}" for c in cells))
    return "\n".join(lines)
