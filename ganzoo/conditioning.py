"""Class-conditional GANs: how the class label reaches G and D, whatever the variant and the architecture.

A conditioning method is a plugin (hook ``ganzoo_conditionings``, specs.ConditionSpec; built in: `concat`,
`projection`, `acgan`). The architecture's plugin builds its two networks exactly as for an unconditional run; the
method wraps them from outside, so no architecture re-implements conditioning:
  G: an embedding of y joined to z (G built for a wider latent: LabelOnLatent), or conditional BatchNorm (every
     BatchNorm layer of the built G gets a per-class gain and bias: with_class_batchnorm);
  D: the architecture's D already returns (logits, features): projection adds <embed(y), features> to the score,
     an auxiliary classifier puts a class head on the features, concat joins an embedding to the features.
The adversarial loss stays the variant's; a method's extra loss terms (ACGAN's class cross-entropy) plug into the
loop's D and G steps like a variant's penalties. This module holds the pieces the core and the method plugins
share: building the networks of a run, drawing labels, and the reusable wrappers.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from . import registry
from .errors import GanzooError
from .specs import ConditionSpec, SampleShape

NONE = "none"


# ---- which method, and whether it fits ----


def condition_spec(config) -> Optional[ConditionSpec]:
    """The run's conditioning method configured with its options, or None for an unconditional run."""
    if config.condition == NONE:
        return None
    return registry.condition(config.condition, config.condition_options)


def check_condition(config, arch_spec, dataset) -> None:
    """A conditional run needs a labelled dataset, an architecture that takes the method, and no packing."""
    if config.condition == NONE:
        return
    registry.get("condition", config.condition)  # an unknown name lists the available ones
    if not dataset.num_classes:
        raise GanzooError(f"--condition {config.condition} needs a labelled dataset; dataset '{config.dataset}' has "
                          "no labels (train it with --condition none)")
    if arch_spec.conditions is not None and config.condition not in arch_spec.conditions:
        takes = ", ".join(arch_spec.conditions) or "no conditioning method"
        raise GanzooError(f"architecture '{config.arch}' cannot take conditioning '{config.condition}' (it takes "
                          f"{takes})")
    if config.pack > 1:
        raise GanzooError("packing (--pack) joins samples of different classes into one D input; it cannot be "
                          f"combined with --condition {config.condition}")


# ---- the networks of a run ----


def build_generator(config, arch_spec, shape: SampleShape, num_classes: Optional[int]) -> nn.Module:
    """The run's G: the architecture's generator, wrapped by the conditioning method when there is one (then
    called as G(z, y), and its `num_classes` attribute says how many classes it takes)."""
    condition = condition_spec(config)
    if condition is None:
        with registry.plugin_code("architecture", config.arch, "build_generator"):
            return arch_spec.build_generator(config.latent_dim, shape)

    def build(latent_dim: int) -> nn.Module:
        with registry.plugin_code("architecture", config.arch, "build_generator"):
            return arch_spec.build_generator(latent_dim, shape)

    with registry.plugin_code("condition", config.condition, "generator"):
        G = condition.generator(build, config.latent_dim, int(num_classes))
    if not isinstance(G, nn.Module):
        raise GanzooError(f"conditioning '{config.condition}': generator must return an nn.Module, got "
                          f"{type(G).__name__}")
    G.num_classes = int(num_classes)
    return G


def build_discriminator(config, arch_spec, shape: SampleShape, num_classes: Optional[int]) -> nn.Module:
    """The run's D: the architecture's discriminator (for packs of config.pack samples), wrapped by the conditioning
    method when there is one (then called as D(x, y))."""
    with registry.plugin_code("architecture", config.arch, "build_discriminator"):
        D = arch_spec.build_discriminator(shape.packed(config.pack))
    condition = condition_spec(config)
    if condition is None:
        return D
    width = feature_dim(D, shape, config.arch)
    with registry.plugin_code("condition", config.condition, "discriminator"):
        wrapped = condition.discriminator(D, width, int(num_classes))
    if not isinstance(wrapped, nn.Module):
        raise GanzooError(f"conditioning '{config.condition}': discriminator must return an nn.Module, got "
                          f"{type(wrapped).__name__}")
    wrapped.num_classes = int(num_classes)
    return wrapped


@torch.no_grad()
def feature_dim(D: nn.Module, shape: SampleShape, arch: str = "?") -> int:
    """Width F of D's features, found by one forward pass of two blank samples in eval mode (BatchNorm statistics
    and spectral norm's vectors stay as they are); features must be (B, F)."""
    was_training = D.training
    D.eval()
    try:
        out = D(torch.zeros(2, *shape.dims))
    finally:
        D.train(was_training)
    features = out[1] if isinstance(out, (tuple, list)) and len(out) >= 2 else None
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[0] != 2:
        got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise GanzooError(f"architecture '{arch}': conditioning needs D's features as a (batch, F) tensor, got {got}")
    return int(features.shape[1])


def is_conditional(G: nn.Module) -> bool:
    return isinstance(getattr(G, "num_classes", None), int)


def describe(module: nn.Module) -> str:
    """Where the label enters a wrapped network (its `where` attribute), for the run's config."""
    return str(getattr(module, "where", ""))


# ---- labels ----


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    """How many training samples each class has (the "data" label distribution)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise GanzooError(f"the training labels lie outside 0..{num_classes - 1}")
    return torch.bincount(labels.long().cpu(), minlength=num_classes)[:num_classes].tolist()


class LabelSampler:
    """The classes G is asked for in training: uniform over the K classes, or following the training split's label
    frequencies ("data"). Drawn from the run's noise generator (checkpointed), so labels are fixed by the seed and
    a resumed run draws the same ones. Never the real batch's labels (a bug public code has shipped)."""

    def __init__(self, mode: str, counts: list[int], device: torch.device):
        if mode not in ("uniform", "data"):
            raise GanzooError(f"fake-labels must be uniform or data, got {mode!r}")
        self.mode, self.num_classes = mode, len(counts)
        weights = torch.tensor(counts, dtype=torch.float64) if mode == "data" else torch.ones(len(counts))
        if float(weights.sum()) <= 0:
            raise GanzooError("the training split has no labels to draw classes from")
        self.probabilities = (weights / weights.sum()).float().to(device)
        self.device = device

    def __call__(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.mode == "uniform":
            return torch.randint(self.num_classes, (n,), device=self.device, generator=generator)
        return torch.multinomial(self.probabilities, n, replacement=True, generator=generator)


def proportional_labels(counts: list[int], n: int, seed: int) -> torch.Tensor:
    """n labels whose class counts follow `counts` as closely as n allows (largest remainders), in an order shuffled
    by `seed`: what the unconditional metrics of a conditional run score (samples whose labels follow the data)."""
    total = float(sum(counts))
    if total <= 0:
        raise GanzooError("no class counts to draw labels from")
    exact = [c / total * n for c in counts]
    whole = [int(e) for e in exact]
    by_remainder = sorted(range(len(counts)), key=lambda k: (-(exact[k] - whole[k]), k))
    for k in by_remainder[:n - sum(whole)]:
        whole[k] += 1
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(whole))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return labels[order]


def labels_argument(labels, n: int, num_classes: int) -> torch.Tensor:
    """What `ganzoo sample` / ganzoo.sample take as labels: one class (int), a list of n classes, or "balanced"
    (classes 0..K-1 in turn, in blocks: row k of a grid of n/K columns is class k)."""
    if isinstance(labels, str):
        text = labels.strip()
        if text == "balanced":
            per = -(-n // num_classes)
            return torch.arange(num_classes).repeat_interleave(per)[:n]
        try:
            labels = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise GanzooError(f"labels must be a class number, a comma-separated list of them or 'balanced', "
                              f"got {text!r}") from None
    if isinstance(labels, bool):
        raise GanzooError(f"labels must be class numbers, got {labels!r}")
    if isinstance(labels, int):
        labels = [labels] * n
    tensor = torch.as_tensor(labels)
    if tensor.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or tensor.dim() != 1:
        raise GanzooError("labels must be a list of class numbers")
    if len(tensor) != n:
        raise GanzooError(f"{len(tensor)} labels given for {n} samples")
    bad = tensor[(tensor < 0) | (tensor >= num_classes)]
    if len(bad):
        raise GanzooError(f"class {int(bad[0])} does not exist; this run has classes 0..{num_classes - 1}")
    return tensor.long()


# ---- building blocks for conditioning plugins ----


class LabelOnLatent(nn.Module):
    """G(z, y) = net([z, embed(y)]): the architecture's generator built for latents embed_dim wider (Mirza &
    Osindero 2014's label joined to the noise, with a learned embedding as torchgan's cGAN)."""

    def __init__(self, build: Callable[[int], nn.Module], latent_dim: int, num_classes: int, embed_dim: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.net = build(latent_dim + embed_dim)
        self.where = f"G: a {embed_dim}-dimensional label embedding joined to z"

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.embed(y).to(z.dtype)], dim=1))


class ClassBatchNorm(nn.Module):
    """Conditional BatchNorm (de Vries et al. 2017; Miyato & Koyama 2018's G): normalise without an affine map, then
    scale by gain[y] (initially 1) and shift by bias[y] (initially 0). The labels are set by ClassBatchNormGenerator
    before each forward pass."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm, num_classes: int):
        super().__init__()
        self.norm = type(norm)(norm.num_features, eps=norm.eps, momentum=norm.momentum, affine=False,
                               track_running_stats=norm.track_running_stats)
        self.gain = nn.Embedding(num_classes, norm.num_features)
        self.bias = nn.Embedding(num_classes, norm.num_features)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)
        self.labels: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.labels is None:
            raise GanzooError("a conditional BatchNorm layer was called without labels")
        view = (x.shape[0], -1) + (1,) * (x.dim() - 2)
        return self.norm(x) * self.gain(self.labels).view(view) + self.bias(self.labels).view(view)


def with_class_batchnorm(module: nn.Module, num_classes: int) -> int:
    """Swap every BatchNorm layer of `module` (any depth) for a ClassBatchNorm of the same width, in place; returns
    how many were swapped."""
    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, ClassBatchNorm(child, num_classes))
            swapped += 1
        else:
            swapped += with_class_batchnorm(child, num_classes)
    return swapped


class ClassBatchNormGenerator(nn.Module):
    """G(z, y): the architecture's generator with its BatchNorm layers made conditional (with_class_batchnorm)."""

    def __init__(self, net: nn.Module, num_classes: int):
        super().__init__()
        self.net = net
        swapped = with_class_batchnorm(net, num_classes)
        if not swapped:
            raise GanzooError("the generator has no BatchNorm layer to make conditional")
        self.where = f"G: conditional BatchNorm ({swapped} layers, a gain and bias per class)"

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        layers = [m for m in self.net.modules() if isinstance(m, ClassBatchNorm)]
        for layer in layers:
            layer.labels = y
        try:
            return self.net(z)
        finally:
            for layer in layers:
                layer.labels = None


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
