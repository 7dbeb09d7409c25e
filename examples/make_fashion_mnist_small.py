"""Rebuild examples/fashion-mnist-small from Fashion-MNIST (MIT licence, Zalando Research).

    python ../shared/datasets/fetch.py fashion-mnist      # -> ~/.cache/vision-data/fashion-mnist.npz
    python examples/make_fashion_mnist_small.py [--per-class 150]

Takes the first ``per-class`` images of each class in the package's order (deterministic) and
writes them as 28x28 grey PNGs to examples/fashion-mnist-small/<class>/<n>.png.
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image

p = argparse.ArgumentParser()
p.add_argument("--npz", type=Path, default=Path.home() / ".cache/vision-data/fashion-mnist.npz")
p.add_argument("--per-class", type=int, default=150)
p.add_argument("--out", type=Path, default=Path(__file__).parent / "fashion-mnist-small")
a = p.parse_args()
d = np.load(a.npz)
x, y, classes = d["x"], d["y"], [str(c) for c in d["classes"]]
for k, name in enumerate(classes):
    folder = a.out / name.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    for n, i in enumerate(np.flatnonzero(y == k)[: a.per_class]):
        Image.fromarray(x[i], "L").save(folder / f"{n:04d}.png", optimize=True)
print(a.out)
