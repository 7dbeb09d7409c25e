"""One typed configuration for a training run.

Every setting lives in a dataclass section below; ``config.yaml`` in each run directory is
``asdict(config)`` with *all* defaults written out, so a run can be repeated exactly with
``vistrain train DATA --config RUN/config.yaml``.

Example:
    >>> from vistrain.config import TrainConfig
    >>> cfg = TrainConfig.from_dict({"train": {"epochs": 3}, "model": {"name": "resnet18"}})
    >>> cfg.train.epochs, cfg.optim.name
    (3, 'adamw')
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vistrain.errors import VistrainError


@dataclass
class DataConfig:
    root: str = ""
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0
    on_bad_image: str = "skip"        # skip | fail: what to do with unreadable files
    batch_size: int = 32
    num_workers: int = -1             # -1: chosen from the CPU count
    balance: str = "auto"             # auto | weights | sampler | none
    cache: str = "auto"               # auto | off: decoded-pixel cache (issue 4)
    doctor: bool = True               # run the fast data checks before training


@dataclass
class PreprocessConfig:
    """How images become tensors; ``None`` means "the model's pretrained config"."""
    size: int | None = None
    resize_mode: str = "crop"         # crop (shorter side + centre crop) | stretch | letterbox
    interpolation: str | None = None  # nearest | bilinear | bicubic | lanczos
    crop_pct: float | None = None
    normalize: str = "auto"           # auto | none | minmax | symmetric | imagenet | model | dataset | explicit
    mean: list[float] | None = None   # for normalize=explicit
    std: list[float] | None = None
    fill: int = 0                     # letterbox padding value
    background: list[int] = field(default_factory=lambda: [255, 255, 255])  # alpha compositing
    grayscale: bool = False           # keep one channel (from-scratch models only)


@dataclass
class AugmentConfig:
    preset: str = "light"             # none | light | medium | heavy
    hflip: bool | None = None         # None: the preset's choice
    vflip: bool | None = None
    rotation: float | None = None     # degrees
    mixup: float = 0.0                # Beta(alpha, alpha); 0 disables
    cutmix: float = 0.0
    mix_switch_prob: float = 0.5      # when both are on: probability of cutmix
    policy: str = "none"              # none | randaugment | trivialaugment
    jitter: str = "matrix"            # matrix: one colour matrix per image (fast) | hsv: exact steps


@dataclass
class ModelConfig:
    name: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = None        # explicit file: safetensors or a plain state dict
    drop_rate: float = 0.2            # dropout before the new head
    norm: str = "batch"               # from-scratch models (issue 8)
    act: str = "relu"
    init: str = "kaiming"


@dataclass
class StrategyConfig:
    name: str = "feature-extraction"  # feature-extraction | finetune | gradual | auto
    feature_cache: str = "clean"      # clean (cached, un-augmented) | live (augmented each epoch)
    head: str = "linear"              # linear | logreg
    logreg_c: float | None = None     # logreg: inverse L2 strength; None = chosen on validation
    unfreeze_every: int = 1           # gradual: epochs between unfreezing groups
    unfreeze_epochs: list[int] | None = None
    lr_factor: float | None = None    # discriminative LR: ratio between consecutive groups (e.g. 2.6)
    group_lrs: list[float] | None = None
    bn_policy: str = "auto"           # auto | frozen | train


@dataclass
class OptimConfig:
    name: str = "adamw"               # adamw | sgd
    lr: float | None = None           # None: chosen from the strategy
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = True
    label_smoothing: float = 0.0
    grad_clip: float | None = None


@dataclass
class ScheduleConfig:
    name: str = "cosine"              # cosine | step | onecycle | cyclic | constant
    warmup_epochs: float = 0.0
    step_size: int = 10
    gamma: float = 0.1
    min_lr_ratio: float = 0.01


@dataclass
class TrainSection:
    epochs: int = 30
    seed: int = 0
    monitor: str = "accuracy"         # validation metric for best checkpoint / early stopping
    patience: int | None = 10         # early stopping; None disables
    amp: bool = True                  # used on CUDA only
    channels_last: bool = True        # used on CUDA only
    cpu_amp: str = "off"              # off | auto (bf16 where the CPU does it natively) | bf16
    checks: bool = False              # quick diagnostics (issue 7) before training
    device: str = "auto"


@dataclass
class LoggingConfig:
    csv: bool = True
    tensorboard: bool = False


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainSection = field(default_factory=TrainSection)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    # -- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "TrainConfig":
        """Build a config, rejecting unknown sections and keys with the list of valid ones."""
        cfg = cls()
        for section, items in (values or {}).items():
            if not hasattr(cfg, section):
                raise VistrainError(f"unknown config section {section!r}; valid: "
                                    f"{', '.join(f.name for f in dataclasses.fields(cls))}")
            update_section(getattr(cfg, section), items or {}, section)
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise VistrainError(f"{path}: config file not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise VistrainError(f"{path}: not valid YAML ({err})") from None
        return cls.from_dict(values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def update_section(section: Any, items: dict[str, Any], name: str) -> None:
    """Set ``items`` on a dataclass section, with a clear error for an unknown key."""
    valid = {f.name for f in dataclasses.fields(section)}
    for key, value in items.items():
        key = key.replace("-", "_")
        if key not in valid:
            raise VistrainError(f"unknown setting {name}.{key}; valid: {', '.join(sorted(valid))}")
        setattr(section, key, value)
