"""One typed, validated configuration for a training run.

Every setting lives in a dataclass section below; ``config.yaml`` in each run directory is
``asdict(config)`` with *all* defaults written out, so a run can be repeated exactly with
``vistrain train DATA --config RUN/config.yaml``.

Choices are ``Literal`` types on the fields and ranges are rules in ``RANGES``
(:mod:`vistrain.config.rules`: data that the JSON Schema of :func:`json_schema` reads too): :meth:`TrainConfig.validate`
checks every setting against them (one-line :class:`VistrainError` naming the key, the value and
what is allowed) and the command line takes its ``choices=`` from the same table
(:func:`choices`).  :meth:`TrainConfig.resolve` fills the settings whose default depends on
others (from-scratch ``vistrain/<name>`` models train every layer, without pretrained weights).
``from_dict``/``load`` validate; entry points (the CLI's ``config_from_args``, the Python API and
``run_training``, before it writes anything) call :meth:`TrainConfig.check`: resolve, then validate.
The settings that both the command line (as flags) and the Python API (as keywords) take are one
table, :data:`vistrain.config.settings.SETTINGS`.

Example:
    >>> from vistrain.config import TrainConfig, choices
    >>> cfg = TrainConfig.from_dict({"train": {"epochs": 3}, "model": {"name": "resnet18"}})
    >>> cfg.train.epochs, cfg.optim.name, cfg.check().strategy.name
    (3, 'adamw', 'auto')
    >>> TrainConfig.from_dict({"model": {"name": "vistrain/resnet20"}}).check().strategy.name
    'finetune'
    >>> choices("data.on_bad_image")
    ('skip', 'fail')
    >>> TrainConfig.from_dict({"train": {"epochs": 0}})
    Traceback (most recent call last):
    ...
    vistrain.errors.VistrainError: train.epochs=0: must be a whole number >= 1
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from vistrain.errors import VistrainError
# the module, not its function: fsutil's messages import vistrain.config.spelling, so either may load first
from vistrain import fsutil
from vistrain.config.rules import Items, Pattern, Range, Rule
from vistrain.config.spelling import option, set_option

SCRATCH_PREFIX = "vistrain/"   # from-scratch models: vistrain/<name>

OnBadImage = Literal["skip", "fail"]
Balance = Literal["auto", "weights", "sampler", "none"]
CacheMode = Literal["auto", "off", "require", "stream"]
ResizeMode = Literal["crop", "stretch", "letterbox"]
Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos"]
Normalize = Literal["auto", "none", "minmax", "symmetric", "imagenet", "model", "dataset", "explicit"]
AugmentPreset = Literal["none", "light", "medium", "heavy"]
AugmentPolicy = Literal["none", "randaugment", "trivialaugment"]
Jitter = Literal["matrix", "hsv"]
Norm = Literal["batch", "layer", "instance", "group", "weight", "none"]
Act = Literal["sigmoid", "tanh", "relu", "leaky_relu", "gelu", "silu"]
Init = Literal["kaiming", "xavier", "default"]
Strategy = Literal["feature-extraction", "finetune", "gradual", "auto"]
FeatureCache = Literal["clean", "live"]
Head = Literal["linear", "logreg"]
BnPolicy = Literal["auto", "frozen", "train"]
Optimizer = Literal["adamw", "sgd"]
Schedule = Literal["cosine", "step", "onecycle", "cyclic", "constant"]
# validation metric: loss (lower is better) or accuracy; "val_" prefixed names are accepted
Monitor = Literal["accuracy", "loss", "val_accuracy", "val_loss"]
CpuAmp = Literal["off", "auto", "bf16"]
HostMemory = Literal["system", "reuse"]
TtaMode = Literal["none", "flip", "flip+crops"]  # test-time augmentation of predict/evaluate
TTA_MODES: tuple[str, ...] = typing.get_args(TtaMode)
Calibration = Literal["temperature", "none"]
Tracker = Literal["tensorboard", "mlflow"]

MAX_SEED = 2 ** 32 - 1   # numpy's legacy seeding takes 0 .. 2**32 - 1


@dataclass
class DataConfig:
    root: str = ""
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0
    on_bad_image: OnBadImage = "skip"   # what to do with unreadable files
    batch_size: int = 32
    num_workers: int = -1               # -1: chosen from the CPU count
    balance: Balance = "auto"
    # decoded-pixel cache: auto (on disk; when it would pass the cache budget or the free disk:
    # in memory if it fits, else streamed from the files), off (in memory), require (on disk or
    # stop), stream (no cache: decoded per batch)
    cache: CacheMode = "auto"
    doctor: bool = True                 # run the fast data checks before training
    max_image_pixels: int = 300_000_000  # larger images are refused as decompression bombs
    groups: str | None = None           # CSV file,group: each group in one split part only
    group_regex: str | None = None      # or the group from each image's relative path


@dataclass
class PreprocessConfig:
    """How images become tensors; ``None`` means "the model's pretrained config"."""
    size: int | None = None
    resize_mode: ResizeMode = "crop"    # crop (shorter side + centre crop) | stretch | letterbox
    interpolation: Interpolation | None = None
    crop_pct: float | None = None
    normalize: Normalize = "auto"
    mean: list[float] | None = None     # for normalize=explicit
    std: list[float] | None = None
    fill: int = 0                       # letterbox padding value
    background: list[int] = field(default_factory=lambda: [255, 255, 255])  # alpha compositing
    grayscale: bool = False             # keep one channel (from-scratch models only)


@dataclass
class AugmentConfig:
    preset: AugmentPreset = "light"
    hflip: bool | None = None           # None: the preset's choice
    vflip: bool | None = None
    rotation: float | None = None       # degrees
    mixup: float = 0.0                  # Beta(alpha, alpha); 0 disables
    cutmix: float = 0.0
    mix_switch_prob: float = 0.5        # when both are on: probability of cutmix
    policy: AugmentPolicy = "none"
    jitter: Jitter = "matrix"           # matrix: one colour matrix per image (fast) | hsv: exact steps


@dataclass
class ModelConfig:
    name: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = None          # explicit file: safetensors or a plain state dict
    drop_rate: float = 0.2              # dropout before the new head
    norm: Norm = "batch"                # from-scratch models only
    act: Act = "relu"
    init: Init = "kaiming"


@dataclass
class StrategyConfig:
    # None: finetune for from-scratch vistrain/<name> models (nothing to transfer), auto otherwise
    name: Strategy | None = None
    feature_cache: FeatureCache = "clean"  # clean (cached, un-augmented) | live (augmented each epoch)
    head: Head = "linear"
    logreg_c: float | None = None       # logreg: inverse L2 strength; None = chosen on validation
    unfreeze_every: int = 1             # gradual: epochs between unfreezing groups
    unfreeze_epochs: list[int] | None = None
    lr_factor: float | None = None      # discriminative LR: ratio between consecutive groups (e.g. 2.6)
    group_lrs: list[float] | None = None
    bn_policy: BnPolicy = "auto"


@dataclass
class OptimConfig:
    name: Optimizer = "adamw"
    lr: float | None = None             # None: chosen from the strategy
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = True
    label_smoothing: float = 0.0
    grad_clip: float | None = None


@dataclass
class ScheduleConfig:
    name: Schedule = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 10
    gamma: float = 0.1
    min_lr_ratio: float = 0.01


@dataclass
class TrainSection:
    epochs: int = 30
    seed: int = 0
    monitor: Monitor = "accuracy"       # validation metric for best checkpoint / early stopping
    patience: int | None = 10           # early stopping; None disables
    amp: bool = True                    # used on CUDA only
    channels_last: bool = True          # used on CUDA only
    cpu_amp: CpuAmp = "off"             # off | auto (bf16 where the CPU does it natively) | bf16
    checks: bool = False                # quick diagnostics before training
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    # reuse: glibc keeps freed blocks for the next batch (~9 % faster CPU epochs, ~20 % more peak
    # memory; vistrain.device.keep_freed_host_memory); process-wide, so only on request
    host_memory: HostMemory = "system"
    # temperature: softmax(logits / T) with T fitted on the validation split (never the test
    # split) and applied by predict/evaluate/export; none: the raw softmax
    calibration: Calibration = "temperature"
    # minutes of wall clock the run must fit (None: no limit): strategy=auto plans its choice
    # into it, a named recipe is estimated before its first epoch; the epochs are cut to fit,
    # and every recipe stops at the budget (best epoch so far) if the estimate was short
    budget: float | None = 15.0
    # also checkpoint within an epoch every this many minutes (None: at epoch ends only); a
    # resumed run continues from that batch, e.g. an epoch of streamed shards that takes hours
    checkpoint_minutes: float | None = None
    # keep checkpoints/last.pt and prev.pt once the run has finished (deleted by default: the
    # finished run is model.safetensors; a finished run is not resumed)
    keep_checkpoints: bool = False


@dataclass
class LoggingConfig:
    csv: bool = True                    # history.csv: one row per epoch
    tensorboard: bool = False           # the same as "tensorboard" in track
    # experiment trackers the finished run is sent to: params, per-epoch and final metrics (and,
    # for mlflow, the report and the model as artifacts)
    track: list[Tracker] | None = None


# Ranges of settings: key -> a rule (vistrain.config.rules) that validation, the flags' help and
# the JSON Schema read.  None passes where the type allows it.
RANGES: dict[str, Rule] = {
    "data.val_fraction": Range(0, 1, high_open=True, text="a fraction in [0, 1)"),
    "data.test_fraction": Range(0, 1, high_open=True, text="a fraction in [0, 1)"),
    "data.split_seed": Range(0, MAX_SEED, text=f"a whole number in [0, {MAX_SEED}]"),
    "data.batch_size": Range(1, text="a whole number >= 1"),
    "data.num_workers": Range(-1, text="a whole number >= -1 (-1: from the CPU count, 0: no workers)"),
    "data.max_image_pixels": Range(1, text="a whole number of pixels >= 1"),
    "preprocess.size": Range(1, text="a whole number of pixels >= 1, or null for the model's size"),
    "preprocess.crop_pct": Range(0, 1, low_open=True, text="a fraction in (0, 1], or null for the model's"),
    "preprocess.mean": Items(Range(finite=True), lengths=(1, 3), text="1 or 3 finite numbers"),
    "preprocess.std": Items(Range(0, low_open=True, finite=True), lengths=(1, 3), text="1 or 3 finite numbers > 0"),
    "preprocess.fill": Range(0, 255, text="a grey level in [0, 255]"),
    "preprocess.background": Items(Range(0, 255), lengths=(3,), text="3 values in [0, 255] (R, G, B)"),
    "augment.rotation": Range(0, 180, text="degrees in [0, 180], or null"),
    "augment.mixup": Range(0, text="a Beta alpha >= 0 (0 disables)"),
    "augment.cutmix": Range(0, text="a Beta alpha >= 0 (0 disables)"),
    "augment.mix_switch_prob": Range(0, 1, text="a probability in [0, 1]"),
    "model.name": Pattern(r"[\s\S]*\S[\s\S]*", text="a timm model name or vistrain/<name>"),
    "model.drop_rate": Range(0, 1, high_open=True, text="a probability in [0, 1)"),
    "strategy.logreg_c": Range(0, low_open=True, text="a number > 0, or null to choose it on validation"),
    "strategy.unfreeze_every": Range(1, text="a whole number of epochs >= 1"),
    "strategy.unfreeze_epochs": Items(Range(2), text="1-based epochs >= 2, e.g. [2, 4, 6]"),
    "strategy.lr_factor": Range(0, low_open=True, text="a ratio > 0, or null"),
    "strategy.group_lrs": Items(Range(0, low_open=True), min_items=1, text="learning rates > 0"),
    "optim.lr": Range(0, low_open=True, finite=True, text="a finite number > 0, or null (chosen by the strategy)"),
    "optim.weight_decay": Range(0, text="a number >= 0"),
    "optim.momentum": Range(0, 1, high_open=True, text="a number in [0, 1)"),
    "optim.label_smoothing": Range(0, 1, high_open=True, text="a number in [0, 1)"),
    "optim.grad_clip": Range(0, low_open=True, text="a norm > 0, or null (no clipping)"),
    "schedule.warmup_epochs": Range(0, text="a number of epochs >= 0"),
    "schedule.step_size": Range(1, text="a whole number of epochs >= 1"),
    "schedule.gamma": Range(0, low_open=True, text="a factor > 0"),
    "schedule.min_lr_ratio": Range(0, 1, text="a ratio in [0, 1]"),
    "train.epochs": Range(1, text="a whole number >= 1"),
    "train.seed": Range(0, MAX_SEED, text=f"a whole number in [0, {MAX_SEED}]"),
    "train.budget": Range(0, low_open=True, finite=True, text="minutes > 0, or null for no limit"),
    "train.checkpoint_minutes": Range(0, low_open=True, finite=True,
                                      text="minutes > 0, or null (epoch ends only)"),
    "train.patience": Range(1, text="a whole number of epochs >= 1, or null (no early stopping)"),
    "train.device": Pattern(r"auto|cpu|cuda(:\d+)?", text="auto, cpu, cuda or cuda:N"),
}


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

    # -- defaults that depend on other settings, and validation ----------------------------------
    def resolve(self) -> "TrainConfig":
        """Fill settings whose default depends on others (in place; returns self).

        ``strategy.name`` left unset (None) becomes ``finetune`` for a from-scratch
        ``vistrain/<name>`` model (its random features are worthless frozen; such a model also
        gets ``pretrained=False``) and ``auto`` for any other model (the recipe chosen by
        measurement within ``train.budget``: :mod:`vistrain.training.auto`).  What resolve
        filled in is remembered, so resolving again after the model changed (``compare --vary
        model=...``, API arguments applied to a loaded config) follows the new model, while a
        value the user set stays.
        """
        if self.data.groups:  # the saved config.yaml must find the file from any folder
            self.data.groups = str(Path(self.data.groups).expanduser().resolve())
        filled = self.__dict__.setdefault("_filled", {})
        scratch = isinstance(self.model.name, str) and self.model.name.startswith(SCRATCH_PREFIX)
        if self.strategy.name is None or self.strategy.name == filled.get("strategy.name"):
            self.strategy.name = filled["strategy.name"] = "finetune" if scratch else "auto"
        if scratch and self.model.pretrained is True:
            self.model.pretrained, filled["model.pretrained"] = False, False
        elif not scratch and filled.get("model.pretrained") is False and self.model.pretrained is False:
            self.model.pretrained = True  # pretrained=False came from an earlier scratch model
            del filled["model.pretrained"]
        return self

    def validate(self) -> "TrainConfig":
        """Check the type, choice and range of every setting; returns self.

        Raises a one-line :class:`VistrainError` naming the key, the value and what is allowed.
        Whole numbers given for decimal settings become floats, tuples become lists.
        """
        for section in dataclasses.fields(self):
            sec = getattr(self, section.name)
            hints = typing.get_type_hints(type(sec))
            for f in dataclasses.fields(sec):
                key = f"{section.name}.{f.name}"
                allowed = RANGES[key].text if key in RANGES else None
                value = _check_type(key, getattr(sec, f.name), hints[f.name], allowed)
                setattr(sec, f.name, value)
                if value is not None and key in RANGES and not RANGES[key].test(value):
                    raise VistrainError(f"{key}={value!r}: must be {RANGES[key].text}")
        d = self.data
        if d.val_fraction + d.test_fraction >= 1:
            raise VistrainError(f"data.val_fraction={d.val_fraction} + data.test_fraction="
                                f"{d.test_fraction} leave no training images; their sum must be < 1")
        if d.groups and d.group_regex:
            raise VistrainError("data.groups and data.group_regex both given; groups come from one: "
                                f"a CSV file ({option('groups', 'FILE')}) or a pattern "
                                f"({option('group_regex', 'PATTERN')})")
        if d.groups and not Path(d.groups).is_file():
            raise VistrainError(f"data.groups={d.groups!r}: no such file; give a CSV file with columns file,group")
        if d.group_regex:
            try:
                re.compile(d.group_regex)
            except re.error as err:
                raise VistrainError(f"data.group_regex={d.group_regex!r}: not a regular expression ({err})") from None
        p = self.preprocess
        if p.normalize == "explicit" and (p.mean is None or p.std is None):
            raise VistrainError("preprocess.normalize='explicit' needs preprocess.mean and "
                                f"preprocess.std, e.g. {set_option('preprocess.mean', [0.5, 0.5, 0.5])}")
        return self

    def check(self) -> "TrainConfig":
        """:meth:`resolve` then :meth:`validate`: what every entry point does before training."""
        return self.resolve().validate()

    # -- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def __str__(self) -> str:
        """The YAML of :meth:`to_yaml`: ``print(vistrain.make_config(DATA, ...))`` shows what
        ``vistrain train DATA ... --print-config`` prints."""
        return self.to_yaml()

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "TrainConfig":
        """Build a validated config, rejecting unknown sections and keys with the list of valid
        ones.  Not yet resolved: settings applied on top (flags, API arguments) may still change
        what :meth:`resolve` decides, so entry points call :meth:`check` last."""
        cfg = cls()
        if values is not None and not isinstance(values, dict):
            raise VistrainError(f"a config is a mapping of sections (data, model, train, ...), "
                                f"got {type(values).__name__}")
        for section, items in (values or {}).items():
            if section not in SECTIONS:
                raise VistrainError(f"unknown config section {section!r}; valid: {', '.join(SECTIONS)}")
            if items is not None and not isinstance(items, dict):
                raise VistrainError(f"config section {section!r} must be a mapping of settings, "
                                    f"got {items!r}")
            update_section(getattr(cfg, section), items or {}, section)
        return cfg.validate()

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise VistrainError(f"{path}: config file not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise VistrainError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
        try:
            return cls.from_dict(values)
        except VistrainError as err:
            raise VistrainError(f"{path}: {err}") from None

    def save(self, path: str | Path) -> None:
        fsutil.atomic_write_text(path, self.to_yaml())


SECTIONS = tuple(f.name for f in dataclasses.fields(TrainConfig))  # data, preprocess, ... logging


def update_section(section: Any, items: dict[str, Any], name: str) -> None:
    """Set ``items`` on a dataclass section, with a clear error for an unknown key."""
    valid = {f.name for f in dataclasses.fields(section)}
    for key, value in items.items():
        key = str(key).replace("-", "_")
        if key not in valid:
            raise VistrainError(f"unknown setting {name}.{key}; valid: {', '.join(sorted(valid))}")
        setattr(section, key, value)


def parse_value(key: str, raw: str):
    """The value of ``--set KEY=RAW``: YAML (numbers, lists, null, true/false), except that a text
    setting keeps the text as given (``cache=off`` is "off", not YAML's boolean false)."""
    hint = type_hint(key.replace("-", "_"))
    base = [a for a in typing.get_args(hint) if a is not type(None)] if hint is not None else []
    textual = hint is str or typing.get_origin(hint) is Literal or (
        len(base) == 1 and (base[0] is str or typing.get_origin(base[0]) is Literal))
    if textual and raw.strip() not in ("null", "~", ""):
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw  # validation names the key and what it allows


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a config file, ``vistrain train --print-schema``: every
    section and setting with its type, choices, range (the rules of ``RANGES``, which validation
    reads too), default and, where a rule says it, what is allowed in words.  Sections and
    settings may be left out (their defaults apply); unknown ones are refused, as
    :meth:`TrainConfig.from_dict` refuses them.

    Example:
        >>> s = json_schema()["properties"]["train"]["properties"]["epochs"]
        >>> s["type"], s["minimum"], s["default"]
        ('integer', 1, 30)
    """
    default = TrainConfig()
    sections = {}
    for section in dataclasses.fields(TrainConfig):
        sec = getattr(default, section.name)
        hints = typing.get_type_hints(type(sec))
        props = {}
        for f in dataclasses.fields(sec):
            key = f"{section.name}.{f.name}"
            rule = RANGES.get(key)
            prop = _schema_of(hints[f.name], rule)
            prop["default"] = getattr(sec, f.name)
            if rule is not None:
                prop["description"] = rule.text
            props[f.name] = prop
        sections[section.name] = {"type": "object", "properties": props, "additionalProperties": False}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "vistrain config.yaml",
            "type": "object", "properties": sections, "additionalProperties": False}


def _schema_of(hint, rule: Rule | None = None) -> dict:
    """The schema of one type hint; ``rule`` constrains its non-null part."""
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        (base,) = [a for a in args if a is not type(None)]
        return {"anyOf": [_schema_of(base, rule), {"type": "null"}]}
    if typing.get_origin(hint) is Literal:
        return {"enum": list(args)}
    if typing.get_origin(hint) is list:
        out = {"type": "array", "items": _schema_of(args[0])}
        if isinstance(rule, Items):
            extra = rule.schema()
            out["items"].update(extra.pop("items", {}))
            out.update(extra)
        return out
    out = {"type": {bool: "boolean", int: "integer", float: "number", str: "string"}[hint]}
    if isinstance(rule, (Range, Pattern)):
        out.update(rule.schema())
    return out


def choices(key: str) -> tuple[str, ...]:
    """The allowed values of a choice setting, e.g. ``choices("strategy.name")``."""
    return _literal_values(type_hint(key))


def type_hint(key: str):
    """The type of setting ``SECTION.FIELD``, e.g. ``int | None`` for ``"preprocess.size"``;
    None for an unknown key."""
    section, _, name = key.partition(".")
    return _section_hints(section).get(name)


@functools.lru_cache(maxsize=None)
def _section_hints(section: str) -> dict:
    """``{field: type}`` of one config section, resolved once: every CLI flag asks for its type and
    choices, and resolving the string annotations each time made ``vistrain --help`` slow."""
    cls = type(getattr(TrainConfig(), section, None))
    return typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}


def _literal_values(hint) -> tuple:
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    for arg in typing.get_args(hint):
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return ()


_TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _check_type(key: str, value, hint, allowed: str | None = None):
    """``value`` checked (and normalised: int -> float, tuple -> list) against the field's type."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise VistrainError(f"{key}=null: a value is required ({allowed or _describe(hint)})")
    base = [a for a in args if a is not type(None)][0] if optional else hint
    if typing.get_origin(base) is Literal:
        if isinstance(value, bool) and {False: "off", True: "on"}[value] in typing.get_args(base):
            value = {False: "off", True: "on"}[value]  # YAML 1.1 reads a bare off/on as a boolean
        if value not in typing.get_args(base):
            raise VistrainError(f"{key}={value!r}: choose one of "
                                f"{', '.join(map(str, typing.get_args(base)))}")
        return value
    if typing.get_origin(base) is list:
        item = typing.get_args(base)[0]
        if isinstance(value, str) and typing.get_origin(item) is Literal:
            value = [value]  # --set logging.track=mlflow: a list of one choice
        if not isinstance(value, (list, tuple)):
            raise VistrainError(f"{key}={value!r}: must be a list of {allowed or 'values'}")
        if typing.get_origin(item) is Literal:  # a list of choices, e.g. logging.track
            return [_check_type(f"{key}[{i}]", v, item, allowed) for i, v in enumerate(value)]
        return [_scalar(f"{key}[{i}]", v, item, allowed) for i, v in enumerate(value)]
    return _scalar(key, value, base, allowed)


def _scalar(key: str, value, kind, allowed: str | None = None):
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
          str: lambda v: isinstance(v, str)}[kind]
    if not ok(value):
        raise VistrainError(f"{key}={value!r}: must be "
                            f"{allowed or _TYPE_WORDS[kind] + (' (finite)' if kind is float else '')}")
    return float(value) if kind is float else value


def _describe(hint) -> str:
    values = _literal_values(hint)
    if values:
        return "one of " + ", ".join(map(str, values))
    base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return _TYPE_WORDS.get(base[0], str(base[0]))
