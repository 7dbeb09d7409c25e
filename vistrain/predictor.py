"""Predict with a trained run or a pretrained ImageNet classifier, preprocessing re-applied exactly.

Example:
    >>> import vistrain
    >>> clf = vistrain.load("runs/demo")                      # doctest: +SKIP
    >>> clf.predict(["shoe.png"], top_k=2)[0]["top"][0]       # doctest: +SKIP
    {'class': 'Sneaker', 'index': 7, 'probability': 0.93}
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vistrain.transforms.preprocess import Preprocess


class Classifier:
    """A model, its class names and its preprocessing; ``predict`` takes files or PIL images."""

    def __init__(self, model: torch.nn.Module, classes: list[str], preprocess: Preprocess,
                 *, source: str = "", device: str = "cpu"):
        self.model = model.to(device).eval()
        self.classes, self.preprocess, self.source = classes, preprocess, source
        self.device = torch.device(device)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> "Classifier":
        from vistrain.artifact import load_model
        model, meta = load_model(run_dir, device=device)
        return cls(model, meta["classes"], Preprocess.from_dict(meta["preprocess"]),
                   source=str(run_dir), device=device)

    @classmethod
    def from_pretrained(cls, name: str, *, weights: str | None = None, device: str = "cpu") -> "Classifier":
        """The pretrained classifier itself (e.g. ImageNet-1k) with the model's own preprocessing."""
        from vistrain.models import create
        from vistrain.transforms.normalize import resolve_normalization
        model, cfg = create(name, None, pretrained=True, weights=weights)
        norm = resolve_normalization("model", model_mean=cfg.mean, model_std=cfg.std)
        pre = Preprocess(size=cfg.input_size[-1], interpolation=cfg.interpolation,
                         crop_pct=cfg.crop_pct, normalize_mode=norm.mode, scale=norm.scale,
                         mean=norm.mean, std=norm.std)
        classes = cfg.label_names or [str(i) for i in range(cfg.num_classes)]
        return cls(model, classes, pre, source=f"{name} ({cfg.weights_source})", device=device)

    @torch.no_grad()
    def predict_proba(self, images, batch_size: int = 32) -> np.ndarray:
        """``(N, K)`` class probabilities for files or PIL images."""
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.stack([self.preprocess.pixels(i) for i in images[start:start + batch_size]])
            x = self.preprocess.normalize(x.to(self.device))
            out.append(self.model(x).float().softmax(1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), np.float32)

    def predict(self, images, top_k: int = 5, batch_size: int = 32) -> list[dict]:
        """One dict per image: ``{"image", "top": [{"class", "index", "probability"}, ...]}``."""
        images = list(images)
        probs = self.predict_proba(images, batch_size)
        k = min(top_k, probs.shape[1])
        results = []
        for img, p in zip(images, probs):
            order = np.argsort(-p)[:k]
            name = str(img) if not isinstance(img, Image.Image) else "<image>"
            results.append({"image": name, "top": [
                {"class": self.classes[i], "index": int(i), "probability": float(p[i])} for i in order]})
        return results
