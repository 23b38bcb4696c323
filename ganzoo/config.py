"""The training configuration: one typed dataclass, validated once, saved beside every run."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .errors import GanzooError

# Fields that change how a run is executed or saved but not what it computes; they are left out of the
# identity of a run, so a run resumed with a different checkpoint interval is still the same run.
# Evaluation during training only reads the generator (the same weights with or without it), so its settings
# are operational too, and so are the speed settings that change results only by float rounding (as running
# on another device or thread count does): adam, compile, channels_last, threads. precision is not: bf16
# changes what is computed.
OPERATIONAL_FIELDS = {"device", "checkpoint_every", "data_root", "download",
                      "eval_every", "eval_samples", "eval_extractor", "eval_metrics", "inception_weights",
                      "adam", "compile", "channels_last", "threads", "tensorboard"}
# Identity fields added after runs already existed: left out of the identity while at their default, so that
# those runs keep their keys (bench names run folders and result rows by key).
LATE_IDENTITY_DEFAULTS = {"precision": "fp32", "optimizer": "adam", "variant_options": {}, "arch_options": {},
                          "ema": 0.0, "ema_start": 0, "pack": 1, "unroll": 0,
                          "condition": "none", "condition_options": {}, "fake_labels": "uniform",
                          "augment": "", "augment_options": {}, "train_subset": 0}
# The fields a variant's recipe fills in when the user leaves them at None (specs.Recipe).
RECIPE_FIELDS = ("d_steps", "optimizer", "lr", "betas")
OPTIMIZERS = ("adam", "rmsprop")
FAKE_LABELS = ("uniform", "data")  # how a conditional run draws the classes it asks G for

PRECISIONS = ("fp32", "bf16")
ADAM_IMPLS = ("fused", "foreach", "for-loop")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def normalize_options(options: Any, kind: str = "dataset") -> dict[str, str]:
    """Plugin options as the command line gives them: string keys and string values (so that
    ``{"size": 64}`` from Python and ``--dataset-option size=64`` are the same run)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise GanzooError(f"{kind} options must be a mapping of name to value, got {type(options).__name__}")
    out = {}
    for key, value in options.items():
        if not isinstance(key, str) or not key.strip() or "=" in key:
            raise GanzooError(f"{kind} option name {key!r} must be a non-empty string without '='")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif not isinstance(value, (str, int, float)):
            raise GanzooError(f"{kind} option {key} must be a string or number, got {type(value).__name__}")
        out[key.strip()] = str(value)
    return dict(sorted(out.items()))


def normalize_dataset_options(options: Any) -> dict[str, str]:
    return normalize_options(options, "dataset")


def _typed_options(options: Any, kind: str) -> dict[str, Any]:
    """Variant and architecture options: kept as given (the plugin's declared types parse strings; a resolved
    config holds the parsed values, so ``gamma=10`` and ``gamma=10.0`` name the same run)."""
    if options is None:
        return {}
    normalize_options(options, kind)  # the same checks on names and value types
    return {k.strip(): v for k, v in sorted(options.items())}


@dataclass(frozen=True)
class TrainConfig:
    variant: str = "vanilla"
    arch: str = "mlp"
    dataset: str = "mnist5k"
    steps: int = 2000
    seed: int = 0
    batch_size: int = 64
    latent_dim: int = 100
    # The recipe: None takes the variant's own (specs.Recipe; the reference recipe is one discriminator step,
    # Adam lr 2e-4 betas (0.5, 0.999)). training.resolve() fills them in; a run's config.json holds the values used.
    d_steps: Optional[int] = None  # discriminator (critic) steps per generator step
    optimizer: Optional[str] = None  # "adam" or "rmsprop", for both networks
    lr: Optional[float] = None
    betas: Optional[tuple[float, float]] = None  # Adam's; None with rmsprop
    device: str = "auto"  # "auto" picks cuda when available, else cpu
    checkpoint_every: int = 500  # steps between checkpoints (the final step is always saved)
    data_root: Optional[str] = None
    download: bool = False  # let a dataset plugin fetch missing files (needs a network)
    dataset_options: dict = field(default_factory=dict)  # --dataset-option key=value; part of the identity
    variant_options: dict = field(default_factory=dict)  # --variant-option key=value; part of the identity
    arch_options: dict = field(default_factory=dict)  # --arch-option key=value; part of the identity
    extra: dict = field(default_factory=dict)  # free-form settings a plugin may read; part of the identity
    # Generator EMA (Yazici et al. 2019; used for the reported scores of StyleGAN2, BigGAN, StudioGAN): after
    # every generator step, G_ema = ema * G_ema + (1 - ema) * G, from step ema_start on (a copy of G before).
    # When on, evaluation, sample grids and `ganzoo sample` use G_ema. 0: off.
    ema: float = 0.0
    ema_start: int = 0
    # Remedies for mode collapse that work with any variant and architecture (training.py, "named places"):
    # PacGAN (Lin et al. 2018): D judges packs of `pack` samples concatenated along channels (or features); only D's
    # input layer changes. As in the PacGAN code, batch_size counts D's inputs: a step draws batch_size packs, that
    # is pack x batch_size real and as many generated samples (G makes them in `pack` batches of batch_size). 1: off.
    pack: int = 1
    # Unrolled GAN (Metz et al. 2017): G's loss is taken through a copy of D advanced `unroll` optimizer steps on
    # the same batch, with gradients through those steps; D takes its one normal step. 0: off.
    unroll: int = 0
    # Class-conditional GANs (ganzoo/conditioning.py): a conditioning method (a plugin: concat, projection, acgan, ...)
    # feeds the class label to G and D; "none" trains unconditionally. Its options: --condition-option key=value.
    # fake_labels: the classes G is asked for in training, drawn "uniform"ly or following the training split's
    # label distribution ("data", as StyleGAN2-ADA does); both from the run's seeded noise generator.
    condition: str = "none"
    condition_options: dict = field(default_factory=dict)
    fake_labels: str = "uniform"
    # Small data (training.py; README "Small data"). augment: a differentiable augmentation of every image D sees
    # (an AugmentationSpec plugin: "diffaugment", "ada"; "": none), with --augment-option key=value options.
    augment: str = ""
    augment_options: dict = field(default_factory=dict)
    # Train on a subset of N images of the training split: stratified by class for labelled datasets (each class in
    # its share), a plain random subset otherwise; the same subset for every seed; the reference split unchanged.
    # 0: the whole split.
    train_subset: int = 0
    eval_every: int = 0  # steps between IS/FID/KID evaluations written to eval.csv (0: off; the last step too)
    eval_samples: int = 5000  # generated images per evaluation during training
    eval_extractor: Optional[str] = None  # feature extractor for those (None: the dataset's default)
    eval_metrics: Optional[list] = None  # metrics for those (None: the dataset's default metrics)
    inception_weights: Optional[str] = None  # weights file for inception-v3-compat (None: torch's hub cache)
    # Speed (measured in benchmarks/RESULTS.md, "Training speed"); evaluation is float32 whatever these say.
    precision: str = "fp32"  # "bf16": forward passes under bfloat16 autocast (weights, Adam, losses stay fp32)
    adam: str = "fused"  # Adam kernel: "fused" (one pass over memory), "foreach", "for-loop" (torch's CPU default)
    compile: str = "off"  # torch.compile G and D: "off", "default", "reduce-overhead" (CUDA graphs), "max-autotune"
    channels_last: bool = False  # NHWC memory layout for conv weights and activations (faster convs on GPUs)
    threads: int = 0  # CPU threads for training (0: torch's default); 1 is faster on a busy shared CPU
    tensorboard: bool = False  # also log to <run>/tensorboard/ (needs the tensorboard package)

    def __post_init__(self):
        for name in ("steps", "batch_size", "latent_dim", "d_steps", "checkpoint_every"):
            value = getattr(self, name)
            if value is None and name in RECIPE_FIELDS:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise GanzooError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise GanzooError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.lr is not None:
            if not (isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and self.lr > 0):
                raise GanzooError(f"lr must be a positive number, got {self.lr!r}")
            object.__setattr__(self, "lr", float(self.lr))
        if self.betas is not None:
            betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else ()
            if len(betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                                          for b in betas):
                raise GanzooError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
            object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        if isinstance(self.ema, bool) or not isinstance(self.ema, (int, float)) or not 0 <= self.ema < 1:
            raise GanzooError(f"ema must be a decay in [0, 1) (0: off), e.g. 0.999; got {self.ema!r}")
        object.__setattr__(self, "ema", float(self.ema))
        if not isinstance(self.ema_start, int) or isinstance(self.ema_start, bool) or self.ema_start < 0:
            raise GanzooError(f"ema-start must be a non-negative integer, got {self.ema_start!r}")
        if not isinstance(self.pack, int) or isinstance(self.pack, bool) or self.pack < 1:
            raise GanzooError(f"pack must be a positive integer (1: no packing; 2 is PacGAN2), got {self.pack!r}")
        if not isinstance(self.unroll, int) or isinstance(self.unroll, bool) or self.unroll < 0:
            raise GanzooError(f"unroll must be a non-negative integer (look-ahead steps of D; 0: off), "
                              f"got {self.unroll!r}")
        if not isinstance(self.augment, str):
            raise GanzooError(f"augment must be an augmentation's name (or empty for none), got {self.augment!r}")
        object.__setattr__(self, "augment", "" if self.augment.strip() in ("", "none") else self.augment.strip())
        object.__setattr__(self, "augment_options", _typed_options(self.augment_options, "augmentation"))
        if self.augment_options and not self.augment:
            raise GanzooError(f"augment options ({', '.join(self.augment_options)}) given without an augmentation; "
                              "add --augment diffaugment or --augment ada")
        if not isinstance(self.train_subset, int) or isinstance(self.train_subset, bool) or self.train_subset < 0:
            raise GanzooError(f"train-subset must be a non-negative integer (images to train on; 0: the whole "
                              f"split), got {self.train_subset!r}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise GanzooError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.optimizer == "rmsprop" and self.betas is not None:
            raise GanzooError("betas are Adam's; optimizer rmsprop takes none (leave --betas out)")
        object.__setattr__(self, "dataset_options", normalize_dataset_options(self.dataset_options))
        object.__setattr__(self, "variant_options", _typed_options(self.variant_options, "variant"))
        object.__setattr__(self, "arch_options", _typed_options(self.arch_options, "architecture"))
        object.__setattr__(self, "condition_options", _typed_options(self.condition_options, "condition"))
        if not isinstance(self.condition, str) or not self.condition.strip():
            raise GanzooError(f"condition must be a conditioning method's name or 'none', got {self.condition!r}")
        if self.fake_labels not in FAKE_LABELS:
            raise GanzooError(f"fake-labels must be one of {', '.join(FAKE_LABELS)}; got {self.fake_labels!r}")
        if self.condition == "none" and self.condition_options:
            raise GanzooError("condition options given without a conditioning method (--condition)")
        if self.condition == "none" and self.fake_labels != "uniform":
            raise GanzooError("fake-labels is for conditional runs; pass --condition too")
        if not isinstance(self.eval_every, int) or isinstance(self.eval_every, bool) or self.eval_every < 0:
            raise GanzooError(f"eval-every must be a non-negative integer (0: off), got {self.eval_every!r}")
        if not isinstance(self.eval_samples, int) or isinstance(self.eval_samples, bool) or self.eval_samples < 2:
            raise GanzooError(f"eval-samples must be an integer of at least 2, got {self.eval_samples!r}")
        if self.compile is True or self.compile is False:  # compile=True from Python means torch's default mode
            object.__setattr__(self, "compile", "default" if self.compile else "off")
        for name, allowed in (("precision", PRECISIONS), ("adam", ADAM_IMPLS), ("compile", COMPILE_MODES)):
            if getattr(self, name) not in allowed:
                raise GanzooError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if not isinstance(self.tensorboard, bool):
            raise GanzooError(f"tensorboard must be true or false, got {self.tensorboard!r}")
        if not isinstance(self.channels_last, bool):
            raise GanzooError(f"channels-last must be true or false, got {self.channels_last!r}")
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 0:
            raise GanzooError(f"threads must be a non-negative integer (0: torch's default), got {self.threads!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = None if self.betas is None else list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise GanzooError(f"unknown training setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{k: (tuple(v) if k == "betas" and isinstance(v, list) else v) for k, v in d.items()})

    def unresolved(self) -> list[str]:
        """Recipe fields still left to the variant (training.resolve fills them in)."""
        return [name for name in RECIPE_FIELDS if getattr(self, name) is None
                and not (name == "betas" and self.optimizer == "rmsprop")]

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items()
                if k not in OPERATIONAL_FIELDS and not (k in LATE_IDENTITY_DEFAULTS and v == LATE_IDENTITY_DEFAULTS[k])}

    def key(self) -> str:
        """A short hash of what this run computes: equal keys mean the same run."""
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def describe_recipe(recipe: Any) -> str:
    """'5 critic steps, adam lr 0.0001 betas (0, 0.9)': a recipe (specs.Recipe, or a resolved TrainConfig)."""
    betas = f" betas ({recipe.betas[0]:g}, {recipe.betas[1]:g})" if recipe.betas is not None else ""
    steps = f"{recipe.d_steps} critic steps" if recipe.d_steps != 1 else "1 D step"
    return f"{steps}, {recipe.optimizer} lr {recipe.lr:g}{betas}"


def describe_training(config: TrainConfig) -> str:
    """The recipe and the variant's and architecture's options of a resolved config, as a leaderboard shows it."""
    options = {**config.variant_options, **{f"arch.{k}": v for k, v in config.arch_options.items()},
               **({"pack": config.pack} if config.pack != 1 else {}),
               **({"unroll": config.unroll} if config.unroll else {}),
               **({"condition": config.condition} if config.condition != "none" else {}),
               **{f"condition.{k}": v for k, v in config.condition_options.items()},
               **({"fake_labels": config.fake_labels} if config.fake_labels != "uniform" else {}),
               **({"augment": config.augment} if config.augment else {}),
               **{f"augment.{k}": v for k, v in _non_default_augment_options(config).items()},
               **({"train_subset": config.train_subset} if config.train_subset else {})}
    return describe_recipe(config) + "".join(f", {k}={v:g}" if isinstance(v, float) else f", {k}={v}"
                                             for k, v in options.items())


def _non_default_augment_options(config: TrainConfig) -> dict[str, Any]:
    """The augmentation's options that differ from its defaults (a resolved config holds all of them)."""
    if not config.augment:
        return {}
    from . import registry

    try:
        declared = registry.get("augmentation", config.augment).spec.options
    except GanzooError:  # a run whose augmentation plugin is not installed here: show what it recorded
        return dict(config.augment_options)
    return {k: v for k, v in config.augment_options.items() if k not in declared or declared[k].default != v}
