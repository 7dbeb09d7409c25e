"""The network of a run wrapped for deployment: uint8 NHWC pixels in, class probabilities out.

:class:`InferenceGraph` performs exactly what :class:`vistrain.predictor.Classifier` does after
:meth:`Preprocess.pixels`: ``(x.float() * scale - mean) / std`` per channel (the operations and
float32 rounding of :func:`vistrain.transforms.normalize.normalize_batch`), the model, softmax.
The layout is NHWC because that is how images come out of every decoder (PIL, OpenCV, browsers),
so a caller without vistrain only resizes and stacks.

Example:
    >>> import torch
    >>> from vistrain.transforms.preprocess import Preprocess
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    >>> g = InferenceGraph(net, Preprocess(size=4)).eval()
    >>> tuple(g(torch.zeros(5, 4, 4, 3, dtype=torch.uint8)).shape)
    (5, 2)
"""
from __future__ import annotations

import torch
from torch import nn

from vistrain.transforms.preprocess import Preprocess

class InferenceGraph(nn.Module):
    """``model`` with ``preprocess``'s normalization in front and the temperature-scaled softmax
    behind.

    ``forward(x)``: ``x`` uint8 ``(N, H, W, C)`` -> float32 probabilities ``(N, K)``.
    """

    def __init__(self, model: nn.Module, preprocess: Preprocess, temperature: float = 1.0):
        super().__init__()
        self.model = model.eval()
        self.temperature = float(temperature)  # the run's calibration: softmax(logits / T)
        self.scale = float(preprocess.scale)
        self.register_buffer("mean", torch.tensor(preprocess.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(preprocess.std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).to(torch.float32)
        x = (x * self.scale - self.mean) / self.std
        return (self.model(x).float() / self.temperature).softmax(1)
