"""Image preprocessing and batch augmentation.

* :mod:`.preprocess`, :mod:`.resize`, :mod:`.normalize` -- per-image resizing and the batch
  normalization that every model input goes through.
* :mod:`.functional` -- augmentation kernels, pure functions of a batch ``(N, C, H, W)`` and
  per-sample parameters, by family (geometry, resample, colour, erase, noise, mix).
* :mod:`.ops` -- augmentation ops: ``make_params`` draws the randomness, ``apply`` calls kernels.
* :mod:`.pipeline` -- :class:`~vistrain.transforms.pipeline.AugmentPipeline`, which plans ops
  into fused stages; :mod:`.presets` builds one from ``AugmentConfig``.
* :mod:`.losses` -- cross-entropy for the soft targets of MixUp/CutMix.

Nothing is imported here, so ``import vistrain.transforms.resize`` stays light.

Example:
    >>> from vistrain.config import AugmentConfig
    >>> from vistrain.transforms.presets import build_augmentation
    >>> augment, mix = build_augmentation(AugmentConfig(preset="light"), 32, num_classes=10)
    >>> type(augment).__name__, mix is None
    ('AugmentPipeline', True)
"""
