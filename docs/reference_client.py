"""`vistrain predict RUN IMAGE...`'s probabilities from an export's metadata alone, with onnxruntime, NumPy and
Pillow only (the temperature is inside the graph). Usage: python reference_client.py MODEL.onnx IMAGE..."""
import json, sys, numpy as np, onnxruntime as ort
from PIL import Image, ImageOps
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
classes, pre = (json.loads(sess.get_modelmeta().custom_metadata_map[key]) for key in ("classes", "preprocess"))
size, resample, mode = pre["size"], Image.Resampling[pre["interpolation"].upper()], pre["resize_mode"]

def load(path):  # metadata "decode", in its order: reduced JPEG decode, EXIF, 16-bit, alpha, colour
    (w, h), short = (img := Image.open(path)).size, min(img.size)
    s = 8 if img.info.get("progressive") and short // 8 >= 8 / 7 * size else min(short / (1.5 * size), 4)
    if img.format == "JPEG" and (s == 8 or short >= 3 * size):
        img.draft("RGB", (int(w / s), int(h / s)))
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16L", "I;16B", "I", "F"):  # 16-bit: / 257; 32-bit: min..max to 0..255
        a = np.asarray(img, np.float64)
        a = a / 257 if img.mode.startswith("I;16") else (a - a.min()) / max(np.ptp(a), 1e-300) * 255
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = Image.alpha_composite(Image.new("RGBA", img.size, (*pre["background"], 255)), img.convert("RGBA"))
    return img.convert("RGB" if pre["channels"] == 3 else "L")

def resize(img):  # metadata "resize": shorter side + centre crop, or stretch / letterbox onto a canvas
    (w, h), k, short = img.size, size / max(img.size), int(size / pre["crop_pct"])  # int: floor
    if mode == "crop":
        new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        x, y = round((new[0] - size) / 2), round((new[1] - size) / 2)
        return (img if new == (w, h) else img.resize(new, resample)).crop((x, y, x + size, y + size))
    new = (size, size) if mode == "stretch" else (max(1, round(w * k)), max(1, round(h * k)))
    canvas = Image.new(img.mode, (size, size), (pre["fill"],) * len(img.getbands()))
    canvas.paste(img.resize(new, resample), ((size - new[0]) // 2, (size - new[1]) // 2))
    return canvas

x = np.stack([np.asarray(resize(load(p)), np.uint8).reshape(size, size, -1) for p in sys.argv[2:]])
print(json.dumps({p: dict(zip(classes, r.tolist())) for p, r in zip(sys.argv[2:], sess.run(None, {"pixels": x})[0])}))
