"""Models: timm backbones with their pretrained configs, and vistrain's from-scratch networks.

``create(name, num_classes, pretrained=True)`` returns ``(model, PretrainedCfg)``.
"""
from vistrain.models.factory import PretrainedCfg, create, imagenet_label_names

__all__ = ["create", "PretrainedCfg", "imagenet_label_names"]
