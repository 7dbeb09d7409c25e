"""Whether ``vistrain serve`` batches requests when ``--max-batch`` is not given: measured on the
served model at start, not fixed per engine.

A batch pays where the model call is a real part of what a request costs: fewer calls, fewer
wake-ups of the engine's threads, and (torch) less of the interpreter lock held by the model's
Python dispatch while the other requests are being read and decoded.  Where the call is cheap
next to the rest of the request (upload, decode, answer: about 3 ms on a 2-core machine), a batch
saves nothing and still costs each request a hand-off to the model's thread.  Measured with
``benchmarks/serve.py`` on 2 cores (docs/benchmarks.md, "Serving"), one image's call alone and
batching's throughput at 32 clients: ``vistrain/resnet20`` at 32 px under ONNX Runtime 0.5 ms,
0.92x-1.09x; the same under torch 3.2 ms, 1.6x-2.4x; EfficientNet-Lite0 14-19 ms under ONNX Runtime,
1.1x-1.45x, and 19-22 ms under torch, 1.2x.  So the server times one image's call at start and
batches when it takes at least :data:`MIN_CALL_MS` (between the cheapest call that gained and the
one that did not); the decision and its figure are logged and reported by ``GET /metadata``, and
``--max-batch`` overrides it.

Example:
    >>> import numpy as np
    >>> class Slow:
    ...     engine, classes = "onnxruntime", ["a", "b"]
    ...     def predict_pixels(self, pixels):
    ...         time.sleep(0.01)
    ...         return np.full((len(pixels), 2), 0.5)
    >>> policy = batch_policy(Slow(), (1, 8, 8), engine_max_batch=32)
    >>> policy.max_batch, policy.reason.startswith("on:")
    (32, True)
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

MIN_CALL_MS = 2.0  # a model call alone at least this long: batching on (see the module docstring)
REPEATS = 5        # timed calls of one image (after one untimed call): the median decides


@dataclass(frozen=True)
class BatchPolicy:
    """``max_batch`` in force and why (``reason``: one line); ``call_ms``: the median time of the
    model call on one image when it was measured (None: given, or not measured)."""
    max_batch: int
    reason: str
    call_ms: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def call_ms(clf, shape: tuple[int, int, int], repeats: int = REPEATS) -> float:
    """Median milliseconds of ``clf.predict_pixels`` on one grey ``(C, S, S)`` uint8 image,
    after one untimed call (first calls allocate)."""
    pixels = [np.full(shape, 128, dtype=np.uint8)]
    clf.predict_pixels(pixels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        clf.predict_pixels(pixels)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def batch_policy(clf, shape: tuple[int, int, int], *, engine_max_batch: int,
                 max_batch: int | None = None) -> BatchPolicy:
    """The batching of a server of ``clf``: ``max_batch`` when given; else, for an engine whose
    batching is measured (``engine_max_batch`` above 1), ``engine_max_batch`` when one image's
    model call takes at least :data:`MIN_CALL_MS`, and 1 (no batching) below."""
    if max_batch is not None:
        return BatchPolicy(max_batch, f"set: --max-batch {max_batch}")
    engine = getattr(clf, "engine", "torch")
    if engine_max_batch <= 1:
        return BatchPolicy(1, f"off: batching is not measured for the {engine} engine; --max-batch N "
                              "turns it on")
    ms = call_ms(clf, shape)
    if ms >= MIN_CALL_MS:
        return BatchPolicy(engine_max_batch, f"on: one image's model call takes {ms:.1f} ms (>= "
                                             f"{MIN_CALL_MS:g} ms), enough for a batch to pay; "
                                             "--max-batch 1 turns it off", ms)
    return BatchPolicy(1, f"off: one image's model call takes {ms:.1f} ms (< {MIN_CALL_MS:g} ms), too "
                          f"cheap for a batch to pay; --max-batch {engine_max_batch} turns it on", ms)
