"""Deployment of a trained run: one self-contained inference file and the engines that run it.

``vistrain export RUN`` writes ``RUN/export/model.onnx`` (or ``model.pt``, TorchScript): a graph
whose input is the uint8 batch ``(N, H, W, C)`` that :meth:`Preprocess.pixels` makes (resized and
cropped, NHWC) and whose output is the class probabilities ``(N, K)``; the cast, scaling and
per-channel normalization are inside the graph, the class names and the resize rule in its
metadata, so a program without vistrain can use it.  Modules:

* ``graph.py``: the wrapped network (:class:`InferenceGraph`) and the metadata it carries;
* ``onnx_export.py`` / ``torchscript.py``: writing and checking each format;
* ``quantize.py``: int8 static quantization (ONNX Runtime, QDQ, calibrated on train images);
* ``parity.py``: the run's test images and the comparison of two engines on them;
* ``engine.py``: the ONNX Runtime engine that :class:`vistrain.predictor.Classifier` uses.

onnx and onnxruntime are optional (``pip install 'vistrain[deploy]'``); they are imported inside
functions (:func:`vistrain.deploy.graph.require`) so that vistrain works without them.
"""
