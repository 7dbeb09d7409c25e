"""``vistrain predict RUN_DIR IMAGE|FOLDER...``: top-k classes of images with a run or a pretrained model.

Files, folders (their images, recursively, sorted) and unreadable files can be mixed: an
unreadable file is reported on its own line (``"error"`` in ``--json``) and the others are
predicted.  Exit code 0 when at least one image was predicted, 2 when none could be.

Output (``--format``): ``text`` shows the top-k of each image given as a file, and one line per
image of a folder (``IMAGE  CLASS  PROB  (2nd PROB, ...)``); ``csv`` one row per image (``file,
class,probability,top_k,error``, ``top_k`` as ``label:prob;label:prob``), for folders of
thousands; ``json`` (``--json``) one document.  ``--out FILE`` writes it there instead of stdout.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from vistrain import fsutil
from vistrain.cli.common import job
from vistrain.cli.evaluate import add_engine_options
from vistrain.errors import VistrainError


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a trained run or a pretrained model",
                       description="Print the most probable classes of each image (files, or "
                                   "folders of images searched recursively) with a trained run "
                                   "or, with --model, a pretrained ImageNet classifier.")
    p.add_argument("run_dir", nargs="?", help="run directory of `vistrain train`, or a MODEL.onnx of "
                   "`vistrain export` (predicts without PyTorch); omit with --model")
    p.add_argument("images", nargs="*", help="image files and/or folders of images")
    p.add_argument("--model", help="use this pretrained (ImageNet) model instead of a run, e.g. tf_efficientnet_lite0")
    p.add_argument("--weights", help="with --model: weights file")
    p.add_argument("--top-k", type=int, default=5,
                   help="classes shown per image, 1 to the number of classes (more: all of them)")
    p.add_argument("--format", choices=("text", "csv", "json"), default=None,
                   help="text (default: top-k per file, one line per image of a folder), csv (one "
                        "row per image: file,class,probability,top_k,error) or json (= --json)")
    p.add_argument("--json", action="store_true", help="print one JSON document (= --format json)")
    p.add_argument("--out", metavar="FILE", help="write the output to FILE instead of stdout")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one) | cpu | cuda | cuda:N")
    add_engine_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    images = list(args.images)
    run_dir = args.run_dir
    if args.model and run_dir:  # with --model the first positional is an image too
        images.insert(0, run_dir)
        run_dir = None
    if args.top_k < 1:
        raise VistrainError(f"--top-k {args.top_k}: must be at least 1 (values above the number of "
                            "classes show them all)")
    if not args.model and not run_dir:
        raise VistrainError("give a run directory (or --model NAME) and images: "
                            "vistrain predict RUN_DIR IMAGE|FOLDER...")
    if not images:
        raise VistrainError("no images given: vistrain predict RUN_DIR IMAGE|FOLDER...")
    fmt = output_format(args)
    check_out_file(args.out)
    result = job("predict").predict_job(run_dir, images, model=args.model, weights=args.weights,
                                        top_k=args.top_k, device=args.device, progress=True,
                                        engine=args.engine, threads=args.threads, tta=args.tta)
    if result["n_predicted"] == 0:
        first = result["predictions"][0]
        raise VistrainError(f"none of the {len(result['predictions'])} images could be predicted; "
                            f"{first['image']}: {first['error']}")
    compact = any(Path(i).is_dir() for i in images)
    text = {"json": lambda: json.dumps(result, indent=1) + "\n", "csv": lambda: as_csv(result["predictions"]),
            "text": lambda: as_text(result["predictions"], compact=compact)}[fmt]()
    if args.out:
        fsutil.atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    if fmt != "json" and result["n_failed"]:  # stdout keeps one line per image; the count is a warning
        print(f"warning: {result['n_failed']} of {len(result['predictions'])} images could not be "
              "read (their error lines are in the output)", file=sys.stderr)
    return 0


def output_format(args) -> str:
    """``--format``, with ``--json`` the same as ``--format json``."""
    if args.json and args.format not in (None, "json"):
        raise VistrainError(f"--json and --format {args.format} disagree; give one of them")
    return "json" if args.json else args.format or "text"


def check_out_file(out: str | None) -> None:
    """A ``--out`` that cannot be written is refused before any image is predicted."""
    if out is None:
        return
    if Path(out).is_dir():
        raise VistrainError(f"--out {out}: is a folder; give a file name, e.g. --out predictions.csv")
    if not Path(out).resolve().parent.is_dir():
        raise VistrainError(f"--out {out}: the folder {Path(out).parent} does not exist; create it or "
                            "give another file")


def top_k_text(top: list[dict]) -> str:
    """``"Bag:0.9712;Coat:0.0120"``: the top-k classes with their probabilities."""
    return ";".join(f"{t['class']}:{t['probability']:.4f}" for t in top)


def as_csv(predictions: list[dict]) -> str:
    """One row per image: ``file,class,probability,top_k,error`` (class empty for an unreadable
    file, its reason in ``error``).

    Example:
        >>> print(as_csv([{"image": "a.png", "top": [{"class": "cat", "probability": 0.9}]}]), end="")
        file,class,probability,top_k,error
        a.png,cat,0.9000,cat:0.9000,
    """
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["file", "class", "probability", "top_k", "error"])
    for r in predictions:
        if "error" in r:
            out.writerow([r["image"], "", "", "", r["error"]])
        else:
            best = r["top"][0]
            out.writerow([r["image"], best["class"], f"{best['probability']:.4f}", top_k_text(r["top"]), ""])
    return buf.getvalue()


def as_text(predictions: list[dict], *, compact: bool) -> str:
    """The text output: the top-k of each image on lines of their own, or (``compact``: folders)
    one line per image, ``IMAGE  CLASS  PROB  (2nd PROB, ...)``."""
    lines = []
    for r in predictions:
        if "error" in r:
            lines.append(f"{r['image']}: error: {r['error']}")
        elif compact:
            best, rest = r["top"][0], r["top"][1:3]
            others = ", ".join(f"{t['class']} {t['probability']:.1%}" for t in rest)
            lines.append(f"{r['image']}  {best['class']}  {best['probability']:.1%}"
                         + (f"  ({others})" if others else ""))
        else:
            lines.append(r["image"])
            lines += [f"  {t['probability']:7.2%}  {t['class']}  [{t['index']}]" for t in r["top"]]
    return "".join(line + "\n" for line in lines)
