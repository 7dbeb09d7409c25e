"""`vistrain predict RUN IMAGE... --json` from an export's metadata alone (decode, resize, preprocess,
classes; the temperature is inside the graph), with onnxruntime, NumPy and Pillow only.
Usage: python reference_client.py RUN/export/model.onnx IMAGE..."""
import json, math, sys
import numpy as np, onnxruntime as ort
from PIL import Image, ImageOps

sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = sess.get_modelmeta().custom_metadata_map
classes, pre = json.loads(meta["classes"]), json.loads(meta["preprocess"])
size, resample, mode = pre["size"], Image.Resampling[pre["interpolation"].upper()], pre["resize_mode"]

def load(path):  # metadata "decode", in its order: reduced JPEG decode, EXIF, 16-bit, alpha, colour
    img = Image.open(path)
    (w, h), short = img.size, min(img.size)
    s = 8 if img.info.get("progressive") and short // 8 >= 8 / 7 * size else min(short / (1.5 * size), 4)
    if img.format == "JPEG" and (s == 8 or short >= 3 * size):
        img.draft("RGB", (int(w / s), int(h / s)))
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16L", "I;16B", "I", "F"):
        a = np.asarray(img, np.float64)
        a = a / 257 if img.mode.startswith("I;16") else (a - a.min()) / max(np.ptp(a), 1e-300) * 255
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = Image.alpha_composite(Image.new("RGBA", img.size, (*pre["background"], 255)), img.convert("RGBA"))
    return img.convert("RGB" if pre["channels"] == 3 else "L")

def resize(img):  # metadata "resize": stretch, letterbox, or shorter side + centre crop
    (w, h), k = img.size, size / max(img.size)
    if mode != "crop":
        new = (size, size) if mode == "stretch" else (max(1, round(w * k)), max(1, round(h * k)))
        canvas = Image.new(img.mode, (size, size), (pre["fill"],) * len(img.getbands()))
        canvas.paste(img.resize(new, resample), ((size - new[0]) // 2, (size - new[1]) // 2))
        return canvas
    short = math.floor(size / pre["crop_pct"])
    new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    img = img if new == (w, h) else img.resize(new, resample)
    left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
    return img.crop((left, top, left + size, top + size))

x = np.stack([np.asarray(resize(load(p)), np.uint8).reshape(size, size, -1) for p in sys.argv[2:]])
probs = sess.run(["probabilities"], {"pixels": x})[0]
print(json.dumps([{"image": p, "top": [{"class": classes[i], "index": int(i), "probability": float(row[i])}
                                       for i in np.argsort(-row, kind="stable")]} for p, row in zip(sys.argv[2:], probs)]))
