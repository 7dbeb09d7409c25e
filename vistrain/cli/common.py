"""Helpers shared by sub-commands: config assembly from flags, printing."""
from __future__ import annotations

import argparse
import json
import os

from vistrain.config import TrainConfig, choices, parse_value, update_section
from vistrain.errors import VistrainError


def add_train_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train``, ``cv`` and ``compare`` (all optional; config file < flags).

    The ``choices=`` come from the config's own table (:func:`vistrain.config.choices`), so a flag
    and ``--set`` accept exactly the same values.
    """
    p.add_argument("--config", help="YAML config (e.g. a run's config.yaml); flags override it")
    p.add_argument("--model", help="timm model name or vistrain/<name> (default tf_efficientnet_lite0)")
    d = TrainConfig()  # the config's defaults, shown in --help (the flags default to "not given")
    p.add_argument("--epochs", type=int, help=f"number of epochs (>= 1; default {d.train.epochs})")
    p.add_argument("--strategy", choices=choices("strategy.name"),
                   help="default: finetune for vistrain/<name> models, feature-extraction otherwise")
    p.add_argument("--lr", type=float, help="base learning rate (default: chosen by strategy)")
    p.add_argument("--batch-size", type=int, help=f"images per batch (default {d.data.batch_size})")
    p.add_argument("--seed", type=int, help=f"seed of initialisation and shuffling (default {d.train.seed}; "
                   f"the split has its own, data.split_seed, default {d.data.split_seed})")
    p.add_argument("--augment", choices=choices("augment.preset"),
                   help=f"augmentation preset (default {d.augment.preset})")
    p.add_argument("--mixup", type=float, help=f"mixup Beta(alpha, alpha); 0 disables (default {d.augment.mixup})")
    p.add_argument("--cutmix", type=float, help=f"cutmix Beta(alpha, alpha); 0 disables (default {d.augment.cutmix})")
    p.add_argument("--jitter", choices=choices("augment.jitter"),
                   help="colour jitter: one colour matrix per image (default, fast) or the exact "
                        "sequential steps with HSV hue (as torchvision)")
    p.add_argument("--no-pretrained", action="store_true", help="random initialisation")
    p.add_argument("--weights", help="pretrained weights file (.safetensors or state dict)")
    p.add_argument("--normalize", choices=choices("preprocess.normalize"),
                   help=f"normalization (default {d.preprocess.normalize}: the model's own statistics "
                        "when pretrained, the training split's otherwise)")
    # from-scratch vistrain/<name> models; names as in vistrain.models.{norms,layers}
    p.add_argument("--norm", choices=choices("model.norm"),
                   help="normalization layer of a vistrain/<name> model (default batch)")
    p.add_argument("--act", choices=choices("model.act"),
                   help="activation of a vistrain/<name> model (default relu)")
    p.add_argument("--init", choices=choices("model.init"),
                   help="weight initialisation of a vistrain/<name> model (default kaiming)")
    p.add_argument("--on-bad-image", choices=choices("data.on_bad_image"),
                   help=f"unreadable files: skip and list them, or stop (default {d.data.on_bad_image})")
    p.add_argument("--max-image-pixels", type=int,
                   help=f"refuse larger images as decompression bombs (default {d.data.max_image_pixels})")
    p.add_argument("--device", help=f"auto | cpu | cuda | cuda:N (default {d.train.device})")
    p.add_argument("--cpu-amp", choices=choices("train.cpu_amp"),
                   help="bfloat16 autocast + channels_last on the CPU (default off; auto = only "
                        "where the CPU does bf16 natively, e.g. AMX: ~2-5x faster)")
    p.add_argument("--host-memory", choices=choices("train.host_memory"),
                   help=f"reuse: let glibc keep freed memory for the next batch (~9 %% faster CPU "
                        f"epochs, ~20 %% more peak memory; default {d.train.host_memory})")
    p.add_argument("--strict", action="store_true",
                   help="key the pixel and feature caches by every byte of every image (default: "
                        "size, mtime and the first and last 64 KiB of each file)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any config setting, e.g. --set optim.name=sgd (repeatable)")


_FLAG_MAP = {"model": ("model", "name"), "epochs": ("train", "epochs"), "strategy": ("strategy", "name"),
             "lr": ("optim", "lr"), "batch_size": ("data", "batch_size"), "seed": ("train", "seed"),
             "augment": ("augment", "preset"), "mixup": ("augment", "mixup"),
             "cutmix": ("augment", "cutmix"), "jitter": ("augment", "jitter"),
             "weights": ("model", "weights"),
             "normalize": ("preprocess", "normalize"), "on_bad_image": ("data", "on_bad_image"),
             "max_image_pixels": ("data", "max_image_pixels"),
             "device": ("train", "device"), "norm": ("model", "norm"), "act": ("model", "act"),
             "init": ("model", "init"), "cpu_amp": ("train", "cpu_amp"),
             "host_memory": ("train", "host_memory")}


def config_from_args(args, data: str | None = None) -> TrainConfig:
    """The config file (``--config``), then the flags, then ``--set``, then ``data``; resolved
    and validated (:meth:`TrainConfig.check`), so a bad value stops here, before any side effect."""
    if getattr(args, "strict", False):
        os.environ["VISTRAIN_CACHE_STRICT"] = "1"  # read by every cache key this process makes
    cfg = TrainConfig.load(args.config) if getattr(args, "config", None) else TrainConfig()
    for flag, (section, key) in _FLAG_MAP.items():
        value = getattr(args, flag, None)
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    if getattr(args, "no_pretrained", False):
        cfg.model.pretrained = False
    for item in getattr(args, "set", []) or []:
        name, sep, raw = item.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot or not hasattr(cfg, section):
            raise VistrainError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. optim.name=sgd")
        update_section(getattr(cfg, section), {key: parse_value(name, raw)}, section)
    if data is not None:
        cfg.data.root = str(data)
    return cfg.check()


def print_json(obj) -> None:
    print(json.dumps(obj, indent=1))
