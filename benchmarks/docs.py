"""Render the benchmark tables of docs/benchmarks.md and the figures README.md quotes from the
records in ``benchmarks/results/`` (written by each benchmark, see ``_record.py``).

A generated part of a page sits between two marker comments, on their own lines for a block or
inline for a single figure::

    <!-- bench:pipeline.cifar -->
    | pipeline | ... |                      <- rewritten from benchmarks/results/pipeline.json
    <!-- /bench:pipeline.cifar -->
    ... feeds <!-- bench:pipeline.photos-later -->49x<!-- /bench:pipeline.photos-later --> more ...

Everything outside the markers is hand-written and left alone.  Each name in ``RENDERERS`` says
which records it reads; a name there without its record, or a marker with an unknown name, is
an error.  Only the standard library is used, so the test suite can import this file.

    python benchmarks/docs.py            # rewrite the generated parts of both pages
    python benchmarks/docs.py --check    # exit 1 and show the difference when a page is not
                                         # what the records generate (nothing written)
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Callable, NamedTuple

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PAGES = [REPO / "docs" / "benchmarks.md", REPO / "README.md"]
MARKER = re.compile(r"<!-- bench:(?P<name>[\w.-]+) -->(?P<body>.*?)<!-- /bench:(?P=name) -->", re.S)


class Renderer(NamedTuple):
    records: tuple[str, ...]          # names of the records it reads (benchmarks/results/<name>.json)
    render: Callable[..., str]        # records, in that order -> the generated text


def load(name: str, results: Path = RESULTS) -> dict:
    path = results / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no record; run the benchmark (make bench-quick or make bench)")
    return json.loads(path.read_text())


# -- formatting ---------------------------------------------------------------------------------------
def x(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}x"


def f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def share(v: float | None) -> str:
    """A fraction of a limit: two decimals, three below 0.1 (a starved run is not 0.00)."""
    return "-" if v is None else f"{v:.2f}" if v >= 0.1 else f"{v:.3f}"


def frac(lim: dict | None) -> str:
    return share(lim.get("fraction")) if lim else "-"


def ratio_range(r: dict) -> str:
    if r["low"] == r["high"]:
        return x(r["median"])
    return f"{x(r['median'])} ({r['low']:.2f}-{r['high']:.2f})"


def provenance(rec: dict) -> str:
    """One line: command, date, commit, machine, load, versions, threads."""
    m, v, g, t = rec["machine"], rec["versions"], rec["git"], rec["threads"]
    load = f"load average {m['load_before'][0]:.1f} before, {m['load_after'][0]:.1f} after"
    commit = f"commit {g['commit'][:10]}" if g.get("commit") else "no git commit"
    torch = f", torch threads {t['torch_threads']}" if t.get("torch_threads") else ""
    vers = ", ".join(f"{k} {v[k]}" for k in ("torch", "torchvision", "onnxruntime", "numpy", "pillow")
                     if v.get(k))
    return (f"Record `benchmarks/results/{rec['name']}.json`: `{rec['command']}`, "
            f"{rec['date'][:10]} ({commit}), {rec['seconds']:.0f} s; {m['cpu']}, {m['cores']} cores, "
            f"{m['ram_gib']} GiB RAM, {load}; {vers}; Python {v['python']}{torch}.")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


# -- the blocks -----------------------------------------------------------------------------------------
def decode_block(rec: dict) -> str:
    rows = [[b["bucket"], str(b["n"]), f(b["pil_img_s"]), f(b["vistrain_img_s"]), x(b["ratio"]),
             f(b["mad"], 2), f(b["dct_scaled_img_s"]), frac(rec["limits"].get(b["bucket"]))]
            for b in rec["derived"]["buckets"]]
    head = ["photos (MP)", "n", "PIL full decode img/s", "vistrain img/s", "ratio", "mean abs diff",
            "limit: DCT-scaled decode img/s", "fraction"]
    jpeg = f" libjpeg-turbo {rec['libjpeg_turbo']}." if rec.get("libjpeg_turbo") else ""
    return provenance(rec) + jpeg + "\n\n" + table(head, rows)


def pipeline_block(key: str) -> Callable[[dict], str]:
    def render(rec: dict) -> str:
        d = rec["derived"][key]
        bound = d["copy_bound_img_per_s"]
        rows = []
        for side, s in d["sides"].items():
            rows.append([side, f(s["first"]), f(s["later"]), ratio_range(s["first_vs_torchvision"]),
                         ratio_range(s["later_vs_torchvision"]), ratio_range(s["later_vs_albumentations"]),
                         f"{s['rss_main_mb']:.0f} / {s['rss_child_mb']:.0f}", share(s["later"] / bound)])
        rows.append([f"limit: numpy copy of the float batches ({d['copy_bound_gb_per_s']:.1f} GB/s)",
                     "", f(bound), "", "", "", "", "1.00"])
        head = ["pipeline", "epoch 1 img/s", "later epochs img/s", "epoch 1 vs torchvision",
                "later vs torchvision", "later vs albumentations", "peak RSS main / largest worker (MB)",
                "fraction of limit (later)"]
        return (f"{d['title']}. " + provenance(rec) + "\n\n" + table(head, rows))
    return render


def pipeline_figure(key: str, side_key: str, digits: int) -> Callable[[dict], str]:
    return lambda rec: x(rec["derived"][key]["sides"]["vistrain"][side_key]["median"], digits)


PIPELINE_TARGETS = [("photos", "first_vs_torchvision", 4.0), ("photos", "later_vs_torchvision", 20.0),
                    ("photos", "later_vs_albumentations", 1.5), ("cifar", "later_vs_torchvision", 20.0),
                    ("cifar", "later_vs_albumentations", 1.5)]


def pipeline_targets(rec: dict) -> str:
    """The vistrain side against the targets, with its fraction of the copy limit."""
    rows = []
    for key, figure, target in PIPELINE_TARGETS:
        d = rec["derived"].get(key)
        if d is None:
            continue
        side = d["sides"]["vistrain"]
        got = side[figure]["median"]
        epoch = "epoch 1" if figure.startswith("first") else "later epochs"
        rows.append([f"{key}, {epoch} vs {figure.rsplit('_', 1)[1]}", f">= {target:g}x", x(got),
                     "met" if got >= target else f"short ({got / target:.0%} of it)",
                     share(side["later"] / d["copy_bound_img_per_s"])])
    head = ["vistrain", "target", "measured", "", "later epochs: fraction of the copy limit"]
    return table(head, rows)


def training_block(rec: dict) -> str:
    d = rec["derived"]
    n = d["n_train"]
    rows = [[side, f(s["seconds_per_epoch"], 2), f(n / s["seconds_per_epoch"]),
             f(d["plain_seconds_per_epoch"], 2), f(n / d["plain_seconds_per_epoch"]),
             frac(rec["limits"].get(side))] for side, s in d["sides"].items()]
    head = ["pipeline", "s / epoch", "img/s", "limit: plain loop s / epoch", "limit img/s", "fraction"]
    return (provenance(rec) + f" {n} training images, {rec['params']['model']}, "
            f"{rec['params']['epochs']} epochs.\n\n" + table(head, rows))


def inference_block(rec: dict) -> str:
    rows = []
    for r in rec["derived"]["rows"]:
        lim = rec["limits"].get(f"t{r['threads']}.{r['engine']}.batch32")
        rows.append([str(r["threads"]), r["engine"], f(r["batch1_ms"]), x(r["batch1_vs_eager"]),
                     f(r["batch32_img_s"]), x(r["batch32_vs_eager"]), f(r["raw_batch32_img_s"]), frac(lim)])
    head = ["threads", "engine", "batch-1 latency (ms)", "vs eager", "batch-32 throughput (img/s)",
            "vs eager", "limit: bare ONNX Runtime batch-32 img/s", "fraction"]
    return provenance(rec) + "\n\n" + table(head, rows)


def inference_range(rec: dict) -> str:
    """The range of ONNX Runtime's (fp32) speed-up over eager across batch sizes and threads."""
    rs = [r[k] for r in rec["derived"]["rows"] if r["engine"] == "onnxruntime"
          for k in ("batch1_vs_eager", "batch32_vs_eager")]
    return f"{min(rs):.1f}-{max(rs):.1f}x"


def feature_block(rec: dict) -> str:
    rows = []
    for t, m in rec["derived"]["threads"].items():
        lims = rec["limits"]
        rows.append([t, f(m["eager"]), f(m["onnxruntime"]), x(m["ratio"]), f(m["raw"]),
                     frac(lims.get(f"t{t}.eager")), frac(lims.get(f"t{t}.onnxruntime"))])
    head = ["threads", "eager img/s", "onnxruntime img/s", "ratio", "limit: bare session img/s",
            "eager fraction", "onnxruntime fraction"]
    p = rec["params"]
    return (provenance(rec) + f" {p['images']} shipped images, chunks of {p['chunk']}, median of "
            f"{p['repeats']} passes.\n\n" + table(head, rows))


PANEL_RECIPES = ("feature-extraction", "finetune", "gradual", "scratch")  # panel.py's fixed recipes


def panel_table(panel: dict) -> str:
    """The panel (``panel.json``'s ``derived``): per data set, test accuracy with its 95 % interval
    and seconds of the default (and the recipe its race chose) and of each fixed recipe run."""
    recipes = [r for r in PANEL_RECIPES if any(r in s["rows"] for s in panel["sets"].values())]

    def cell(r: dict) -> str:
        if "accuracy" not in r:
            return "-" if not r else f"failed: {r.get('error', '?')[:60]}"
        ci = r.get("ci") or {}
        interval = f" ({ci['low']:.3f}-{ci['high']:.3f})" if ci else ""
        return f"{r['accuracy']:.3f}{interval}, {r['seconds']:.0f} s"
    rows = []
    for name, s in panel["sets"].items():
        d = s["rows"].get("default", {})
        bad = [k for k, v in s["checks"].items() if v is False]
        rows.append([name, f"{cell(d)}, {d.get('chosen') or d.get('strategy') or '-'}",
                     *(cell(s["rows"].get(r, {})) for r in recipes),
                     "all hold" if not bad else "fails: " + ", ".join(bad)])
    return table(["data set", "default (race winner)", *recipes, "checks"], rows)


def panel_block(rec: dict) -> str:
    return (provenance(rec) + f" Budget {rec['derived']['budget_minutes']:g} min per run.\n\n"
            + panel_table(rec["derived"]))


def serve_block(rec: dict) -> str:
    """Per engine and client count, both settings with their latency percentiles and throughput,
    then batching's ratio and whether batching is on by default for that engine."""
    p, d = rec["params"], rec["derived"]
    def lim(r: dict) -> dict | None:  # records before the side-by-side limit: none for W workers
        if r.get("workers", 1) > 1 and "engine_img_s_by_workers" not in rec["derived"]:
            return None
        return rec.get("limits", {}).get(f"{r['engine']}/{r['clients']}/{serve_setting(r, p['wait_ms'])}")
    rows = [[r["engine"], str(r["clients"]), serve_setting(r, p["wait_ms"]),
             f"{r['answered']:,}", str(r["errors"]), f(r["p50_ms"], 0), f(r["p95_ms"], 0), f(r["p99_ms"], 0),
             f(r["rps"]), f(r["batch"]), f(lim(r)["limit"]) if lim(r) else "-", frac(lim(r))]
            for r in rec["repeats"]]
    head = ["engine", "clients", "setting", "answered", "errors", "p50 ms", "p95 ms", "p99 ms", "req/s",
            "mean batch", "limit: model call alone img/s", "fraction"]
    ratios = "; ".join(
        f"{e}: " + ", ".join(f"{x(v)} at {c} client{'s' if c != '1' else ''}" for c, v in by.items())
        + default_note(d, e) for e, by in d["throughput_ratio"].items())
    inter_op = "; ".join(
        f"{e}: " + ", ".join(f"{x(v)} {setting} at {c} client{'s' if c != '1' else ''}"
                             for c, by_setting in by.items() for setting, v in by_setting.items())
        for e, by in d.get("inter_op_ratio", {}).items())
    workers = max((r.get("workers", 1) for r in rec["repeats"]), default=1)
    return (provenance(rec) + f" {p['model']} at {p['size']} px, {p['requests']} requests per setting in "
            f"{p['rounds']} alternating rounds (at most {p['max_seconds']:g} s per setting); req/s is the "
            f"median over rounds.\n\n" + table(head, rows) + f"\n\nBatching / no batching: {ratios}."
            + (f"\n\n{workers} model workers (each on 1/{workers} of the cores) / one (on all of them), the same setting: {inter_op}." if inter_op else ""))


def default_note(d: dict, engine: str) -> str:
    """What a server without --max-batch did on this model, and whether it was right (a record
    before the measured decision says whether the engine's fixed default paid)."""
    if "default_decided" in d:
        decided = d["default_decided"][engine].split(":")[0]
        right = "right" if d["default_right"][engine] else "WRONG"
        return f" (without --max-batch the server measured the model and turned batching {decided}: {right})"
    pays = d["default_pays"].get(engine)
    return (f" (default --max-batch {d['default_max_batch'][engine]}"
            + ("" if pays is None else f", {'pays' if pays else 'does NOT pay'}") + ")")


def serve_setting(r: dict, wait_ms: float) -> str:
    """A server's setting as the serving tables name it."""
    name = f"batching (max {r['max_batch']}, {wait_ms:g} ms)" if r["max_batch"] > 1 else "no batching"
    workers = r.get("workers", 1)
    return name + (f", {workers} model workers" if workers > 1 else "")


def serve_ratio(engine: str, clients: int, what: str = "throughput_ratio", setting: str | None = None):
    """One figure of a serving record, for the README: batching's throughput over no batching's
    (or, with ``what="inter_op_ratio"``, the model workers' over one worker's in ``setting``) for
    ``engine`` at ``clients``."""
    def render(rec: dict) -> str:
        v = rec["derived"][what][engine][str(clients)]
        return x(v[setting] if setting else v)
    return render


def jpeg_dc_block(rec: dict) -> str:
    """Per progressive photo: draft 1/4 and 1/8 against the DC-only decode, time and pixels."""
    def chroma(c: str) -> str:  # "420" -> "4:2:0"
        return ":".join(c) if len(c) == 3 and c.isdigit() else c
    rows = [[r["file"], f"{r['size'][0]}x{r['size'][1]}", chroma(r["chroma"]), f(r["file_mb"]), f(r["stream_mb"], 2),
             f(r["draft_quarter_s"] * 1e3), f(r["draft_eighth_s"] * 1e3), f(r["dc_s"] * 1e3),
             "yes" if r["same_pixels_as_eighth"] else "no", f(r["mad_quarter"], 2), f(r["mad_dc"], 2)]
            for r in rec["repeats"]]
    head = ["file", "size", "chroma", "file MB", "stream MB", "draft 1/4 ms", "draft 1/8 ms", "DC-only ms",
            "same pixels as 1/8", "MAD 1/4", "MAD DC-only"]
    return (provenance(rec) + f" Median of {rec['params']['repeats']} decodes per file; MAD against full "
            f"decode + bicubic resize to shorter side {rec['params']['short']}.\n\n" + table(head, rows))


def openvino_block(rec: dict) -> str:
    """Per thread count: ONNX Runtime and OpenVINO on the same graph, batch 1 and 32, and the
    ratios against ONNX Runtime; the largest probability difference between the two."""
    rows, diffs = [], []
    for t, by in rec["derived"].items():
        diffs.append(f"{by['max_probability_difference']:.1g} at {t} thread{'s' if t != '1' else ''}")
        for name in ("onnxruntime", "openvino"):
            r = by[name]
            rows.append([t, name, f(r["batch1_img_s"]), f(r["batch1_ms"], 2), f(r["batch32_img_s"]),
                         f"{x(r['vs_ort_batch1'])} / {x(r['vs_ort_batch32'])}"])
    head = ["threads", "engine", "batch 1 img/s", "batch-1 ms", "batch 32 img/s", "speed vs ONNX Runtime (1 / 32)"]
    p = rec["params"]
    return (provenance(rec) + f" EfficientNet-Lite0 at 224 px as `vistrain export` writes it; medians of "
            f"{p['repeats_1']} batch-1 and {p['repeats_32']} batch-32 calls, the engines alternating.\n\n"
            + table(head, rows) + f"\n\nLargest probability difference: {', '.join(diffs)}.")


RENDERERS: dict[str, Renderer] = {
    "panel": Renderer(("panel",), panel_block),
    "jpeg_dc": Renderer(("jpeg_dc",), jpeg_dc_block),
    "serve_small": Renderer(("serve_small",), serve_block),
    "serve_small_t1": Renderer(("serve_small_t1",), serve_block),
    "serve_small_w2": Renderer(("serve_small_w2",), serve_block),
    "serve_small_w20": Renderer(("serve_small_w20",), serve_block),
    "serve": Renderer(("serve",), serve_block),
    "serve_m2": Renderer(("serve_m2",), serve_block),
    "serve_small_m2": Renderer(("serve_small_m2",), serve_block),
    "serve.ort32": Renderer(("serve",), serve_ratio("onnxruntime", 32)),
    "serve.torch32": Renderer(("serve",), serve_ratio("torch", 32)),
    "serve_small.torch32": Renderer(("serve_small",), serve_ratio("torch", 32)),
    "serve_m2.ort32": Renderer(("serve_m2",), serve_ratio("onnxruntime", 32, "inter_op_ratio", "batching")),
    "serve_m2.ort1": Renderer(("serve_m2",), serve_ratio("onnxruntime", 1, "inter_op_ratio", "no batching")),
    "openvino": Renderer(("openvino",), openvino_block),
    "decode": Renderer(("decode",), decode_block),
    "pipeline.photos": Renderer(("pipeline",), pipeline_block("photos")),
    "pipeline.cifar": Renderer(("pipeline",), pipeline_block("cifar")),
    "pipeline.targets": Renderer(("pipeline",), pipeline_targets),
    "pipeline.photos-first": Renderer(("pipeline",), pipeline_figure("photos", "first_vs_torchvision", 1)),
    "pipeline.photos-later": Renderer(("pipeline",), pipeline_figure("photos", "later_vs_torchvision", 0)),
    "pipeline.cifar-later": Renderer(("pipeline",), pipeline_figure("cifar", "later_vs_torchvision", 0)),
    "training": Renderer(("pipeline_accuracy",), training_block),
    "inference": Renderer(("inference",), inference_block),
    "inference.range": Renderer(("inference",), inference_range),
    "feature_engine": Renderer(("feature_engine",), feature_block),
}


# -- pages ------------------------------------------------------------------------------------------------
def render(name: str, results: Path = RESULTS) -> str:
    if name not in RENDERERS:
        raise KeyError(f"<!-- bench:{name} -->: no such generated block (known: {', '.join(RENDERERS)})")
    r = RENDERERS[name]
    return r.render(*(load(n, results) for n in r.records))


def blocks(text: str) -> list[tuple[str, str]]:
    """``(name, body)`` of every generated part of ``text``."""
    return [(m["name"], m["body"]) for m in MARKER.finditer(text)]


def generate(text: str, results: Path = RESULTS) -> str:
    """``text`` with every generated part rendered anew from the records."""
    def one(m: re.Match) -> str:
        body = render(m["name"], results)
        if m["body"].startswith("\n"):  # a block: the markers on their own lines
            body = f"\n{body}\n"
        return f"<!-- bench:{m['name']} -->{body}<!-- /bench:{m['name']} -->"
    return MARKER.sub(one, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a page differs; write nothing")
    args = ap.parse_args(argv)
    differ = False
    for page in PAGES:
        old = page.read_text()
        new = generate(old)
        if new == old:
            continue
        differ = True
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                       str(page.relative_to(REPO)), "generated"))
        else:
            tmp = page.with_name(f".{page.name}.tmp")
            tmp.write_text(new)
            tmp.replace(page)
            print(f"updated {page.relative_to(REPO)}")
    if args.check and differ:
        print("benchmark figures differ from the records: run `make bench-docs`", file=sys.stderr)
    return 1 if args.check and differ else 0


if __name__ == "__main__":
    sys.exit(main())
