"""``POST /explain`` of ``vistrain serve``: the Grad-CAM overlay of an upload, from the torch model.

The one part of the server that needs PyTorch (the network, its gradients): :mod:`vistrain.server.app`
imports this module only when ``/explain`` is asked of a classifier that has a torch model, so that
a server of an ONNX export runs without torch (and answers ``/explain`` with 501 there).

Example:
    >>> cam = GradCam(vistrain.load("runs/demo"), ModelLock())           # doctest: +SKIP
    >>> png, label, probability = cam.png(pixels, "gradcam")            # doctest: +SKIP
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from vistrain.interpret.cam import METHODS, compute_cam, find_target_layer, overlay
from vistrain.server.batcher import ModelLock

__all__ = ["GradCam", "METHODS"]


class GradCam:
    """CAM overlays of one classifier, its model shared with the batcher's workers under ``lock``
    (Grad-CAM adds a forward hook that no batch may see: it takes the lock alone); the target layer
    is found once."""

    methods = METHODS  # the ?method= values /explain takes

    def __init__(self, clf, lock: ModelLock):
        self.clf, self.lock = clf, lock
        self._layer: str | None = None

    def png(self, pixels: np.ndarray, method: str) -> tuple[bytes, str, float]:
        """PNG of the CAM overlay on the model input (after resize/crop, before normalization, so
        the map lines up), the predicted class and its probability."""
        clf, pre = self.clf, self.clf.preprocess
        x_uint8 = torch.as_tensor(pixels)
        x = pre.normalize(x_uint8[None].to(clf.device))
        with self.lock.exclusive():
            if self._layer is None:  # found once: the search runs a probe forward pass
                self._layer = find_target_layer(clf.model, (pre.channels, pre.size, pre.size))[0]
            # the class and probability /predict gives (engine, calibration, test-time augmentation)
            probs = clf.predict_pixels([x_uint8])[0]
            pred = int(probs.argmax())
            cams, _ = compute_cam(clf.model, x, target_class=pred, method=method,
                                  target_layer=self._layer)
        blend = overlay(x_uint8.permute(1, 2, 0).numpy(), cams[0].cpu())
        buf = io.BytesIO()
        Image.fromarray(blend).save(buf, "PNG")
        return buf.getvalue(), clf.classes[pred], float(probs[pred])
