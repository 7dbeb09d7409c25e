"""``vistrain export RUN_DIR``: the run as one deployable file, checked against the run.

``--format onnx`` (default) writes ``RUN_DIR/export/model.onnx``, ``--format torchscript``
``RUN_DIR/export/model.pt``, ``--format openvino`` ``RUN_DIR/export/model.xml`` + ``model.bin``
(converted from the ONNX graph; ``pip install 'vistrain[openvino]'``): uint8 ``(N, H, W, C)`` pixels in, probabilities out, normalization
inside; ``--quantize int8`` adds ``model.int8.onnx``.  Parity with the PyTorch model on the run's
test images is printed and saved in ``RUN_DIR/export/parity.json``; an export that does not
reproduce the run is an error and nothing is written.
"""
from __future__ import annotations

import sys

from vistrain.cli.common import job, print_json


def register(sub) -> None:
    p = sub.add_parser("export", help="export a trained run to ONNX or TorchScript (parity checked)",
                       description="Write RUN_DIR/export/model.onnx (or model.pt): uint8 NHWC pixels "
                                   "at the model's input size in, class probabilities out, the "
                                   "normalization inside the graph and the class names and resize "
                                   "rule in its metadata. The export is compared with the PyTorch "
                                   "model on the run's test images (top-1 agreement 100 percent, largest "
                                   "probability difference <= 1e-4) and not written if it differs.")
    p.add_argument("run_dir", help="run directory of `vistrain train`")
    p.add_argument("--format", default="onnx", help="onnx | torchscript | openvino (model.xml + "
                   "model.bin, the OpenVINO IR; needs pip install 'vistrain[openvino]')")
    p.add_argument("--quantize", metavar="int8", help="also write model.int8.onnx (static int8, "
                   "calibrated on training images) and report its accuracy change")
    p.add_argument("--calibration", type=int, default=96,
                   help="training images that calibrate int8 (decoded and fed 2 at a time; an even number uses all)")
    p.add_argument("--quantize-method", default="static", help="static | dynamic (int8 method)")
    p.add_argument("--data", metavar="DIR", help="the run's data folder when it moved (where the "
                   "test images for the parity check are)")
    p.add_argument("--threads", type=int, help="ONNX Runtime (or OpenVINO) threads (default: "
                   "torch's, i.e. the same cores as the PyTorch model)")
    p.add_argument("--json", action="store_true", help="print the parity report as one JSON document")
    p.set_defaults(func=run)


def run(args) -> int:
    report = job("export").export(args.run_dir, format=args.format, quantize=args.quantize, data=args.data,
                    threads=args.threads, calibration=args.calibration,
                    quantize_method=args.quantize_method, progress=not args.json)
    q = report.get("onnx_int8") if args.quantize else None
    if args.json:
        print_json(report)
        return 0 if q is None or q["promoted"] else 1
    images = report["images"]
    on = f"{images['n']} {images['part']} images"
    for key, label in (("onnx", "onnxruntime"), ("torchscript", "torchscript"), ("openvino", "openvino")):
        e = report.get(key) if report["format"] == key else None
        if e:
            names = " + ".join(e.get("files", [e["file"]]))
            print(f"exported {report['run_dir']}/export/{names} ({e['bytes'] / 1e6:.1f} MB)")
            print(f"parity on {on}, {label} vs torch: top-1 agreement {e['top1_agreement']:.2%}, "
                  f"largest probability difference {e['max_abs_diff']:.2g} (limit {e['tolerance']:g})")
    if q and not q["promoted"]:
        print(f"parity report: {report['parity_file']}")
        print(int8_refusal(q, on), file=sys.stderr)
        return 1
    if q:
        print(f"int8: {report['run_dir']}/export/{q['file']} ({q['bytes'] / 1e6:.1f} MB), {q['quantization']}")
        print(f"int8 accuracy on {on}: {q['accuracy_fp32']:.2%} -> {q['accuracy_int8']:.2%} "
              f"({q['accuracy_change'] * 100:+.1f} points), top-1 agreement with fp32 "
              f"{q['top1_agreement_with_fp32']:.2%}")
    print(f"parity report: {report['parity_file']}")
    return 0


def int8_refusal(q: dict, on: str) -> str:
    """The one line of an int8 file that was not promoted: the gate's numbers."""
    g = q["gate"]
    return (f"int8 not promoted: on {on} accuracy {q['accuracy_fp32']:.2%} -> {q['accuracy_int8']:.2%} "
            f"({q['accuracy_change'] * 100:+.1f} points, at most -{g['max_accuracy_drop'] * 100:g} allowed), "
            f"top-1 agreement with fp32 {q['top1_agreement_with_fp32']:.2%} (at least "
            f"{g['min_top1_agreement']:.0%} needed); model.int8.onnx not written, model.onnx is the export")
