"""What a plugin can contribute: small frozen dataclasses, one per kind of thing.

A plugin returns lists of these from its hook implementations (see hookspecs.py). Everything the core needs
to know about a variant, an architecture or a dataset is here, so the core never imports a plugin directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn


@dataclass(frozen=True)
class DiscriminatorOutput:
    """What one discriminator forward pass gives a loss: raw scores and the intermediate features f(x)."""

    logits: torch.Tensor  # (B,) raw, pre-sigmoid scores
    features: torch.Tensor  # (B, F) activations of an intermediate layer (feature matching uses them)


# d_loss(real, fake) and g_loss(fake, real): real is None in the generator step unless the variant asks for it.
DiscriminatorLoss = Callable[[DiscriminatorOutput, DiscriminatorOutput], torch.Tensor]
GeneratorLoss = Callable[[DiscriminatorOutput, Optional[DiscriminatorOutput]], torch.Tensor]

# What the training loop offers a penalty or a hook, by argument name; each receives only the names it declares
# (compare_gan's convention), so a penalty on real images alone says `def r1(discriminate, real_images)`.
STEP_ARGUMENTS = {
    "discriminate": "images -> DiscriminatorOutput, differentiable with respect to the images (create_graph works)",
    "discriminator": "the discriminator nn.Module (its weights: clipping, norms)",
    "generator": "the generator nn.Module",
    "real_images": "this discriminator step's real batch, float in [-1, 1]",
    "fake_images": "this discriminator step's generated batch (detached from the generator)",
    "real": "DiscriminatorOutput of the real batch in this discriminator step",
    "fake": "DiscriminatorOutput of the generated batch in this discriminator step",
    "step": "generator steps completed before this one (0-based)",
    "d_step": "discriminator steps completed before this one (0-based; d_steps per generator step)",
    "rng": "the run's torch.Generator on the training device (checkpointed: draws from it resume exactly)",
}


@dataclass(frozen=True)
class Penalty:
    """A regulariser added to the discriminator's loss: weight * compute(**declared arguments).

    `compute` names the STEP_ARGUMENTS it needs and returns a scalar tensor; it is logged unweighted in its own
    log.csv column, `name`. With every=k it is applied only on discriminator steps whose d_step is a multiple
    of k, multiplied by k so that its average strength is unchanged (lazy regularisation, StyleGAN2).
    """

    name: str  # a log.csv column: lowercase letters, digits and underscores
    compute: Callable[..., torch.Tensor]
    weight: float = 1.0
    every: int = 1


@dataclass(frozen=True)
class Recipe:
    """How a variant is trained when the user does not say otherwise (the reference recipe by default).

    The optimizer is used for both networks: "adam" (lr, betas) or "rmsprop" (lr; betas must be None).
    `ganzoo train --lr/--betas/--d-steps/--optimizer` (or a bench's [train] table) override single fields.
    """

    d_steps: int = 1  # discriminator (critic) steps per generator step
    optimizer: str = "adam"
    lr: float = 2e-4
    betas: Optional[tuple[float, float]] = (0.5, 0.999)


@dataclass(frozen=True)
class Option:
    """One option a plugin takes (``--variant-option name=value``): its default, which also fixes its type
    (bool, int, float or str), and a line of help. The core parses and checks the type; `configure` checks
    the value (a range, say) and raises GanzooError with one line when it is wrong.

    late=True marks an option added to a plugin after runs with it already existed: while at its default it is
    left out of the options a run config stores, so those runs keep their keys (as config.LATE_IDENTITY_DEFAULTS
    does for training settings); `configure` still receives it."""

    default: Any
    help: str = ""
    late: bool = False


@dataclass(frozen=True)
class VariantSpec:
    """A GAN variant: the losses the shared training loop minimises, and what else it needs around them.

    Named places in the loop (training.py), each optional except the two losses:
      discriminator step: discriminator_loss(real, fake) + sum of penalty weight * penalty, one backward pass,
                          then after_discriminator_step(**declared STEP_ARGUMENTS) (e.g. weight clipping)
      generator step:     generator_loss(fake, real), then after_generator_step(**declared STEP_ARGUMENTS)
      recipe:             critic steps and optimizer, unless the user overrides a field
      options:            ``--variant-option key=value``; `configure(values)` returns the spec they describe
    """

    name: str
    description: str
    discriminator_loss: DiscriminatorLoss
    generator_loss: GeneratorLoss
    paper: str = ""
    # Feature matching compares real and fake features in the generator step; the others need only the fake
    # batch there, so the loop skips the extra real forward pass unless this is set.
    generator_needs_real: bool = False
    # How a raw score becomes "D(x)" in logs and plots: a probability for BCE-trained discriminators; the raw
    # value for least squares (targets 0 and 1) and for critics.
    d_value: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid
    # The value d_value takes when D cannot tell real from generated (0.5 for probabilities and for least
    # squares' 0-1 coding); None for critics, whose unbounded scores have no such value.
    equilibrium: Optional[float] = 0.5
    penalties: tuple[Penalty, ...] = ()
    after_discriminator_step: Optional[Callable[..., Any]] = None
    after_generator_step: Optional[Callable[..., Any]] = None
    recipe: Recipe = Recipe()
    options: dict = field(default_factory=dict)  # name -> Option
    configure: Optional[Callable[[dict], "VariantSpec"]] = None  # typed option values -> configured spec


@dataclass(frozen=True)
class ImageShape:
    channels: int
    size: int  # square images: size x size

    @property
    def numel(self) -> int:
        return self.channels * self.size * self.size


@dataclass(frozen=True)
class ArchitectureSpec:
    """A generator/discriminator pair.

    The generator maps (B, latent_dim) noise to (B, C, H, W) images in [-1, 1]. The discriminator maps such
    images to a tuple (logits of shape (B,), features of shape (B, F)).
    """

    name: str
    description: str
    build_generator: Callable[[int, ImageShape], nn.Module]  # (latent_dim, shape) -> module
    build_discriminator: Callable[[ImageShape], nn.Module]  # (shape) -> module
    paper: str = ""
    image_sizes: tuple[int, ...] = ()  # sizes it supports; empty means any
    options: dict = field(default_factory=dict)  # name -> Option (``--arch-option key=value``)
    configure: Optional[Callable[[dict], "ArchitectureSpec"]] = None  # typed option values -> configured spec


@dataclass(frozen=True)
class ImageData:
    """A whole split in memory: uint8 images (N, C, H, W) and, for labelled data, int64 labels (N,)."""

    images: torch.Tensor
    labels: Optional[torch.Tensor] = None
    info: dict = field(default_factory=dict)  # provenance recorded in run configs (source files, split rule)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its shape, classes, splits and a loader.

    load(split, root, download) returns ImageData for one split; `root` is the resolved data root (a folder
    path string; --data-root or ganzoo.paths.data_dir()). `train_split` is what GANs train on;
    `reference_split` is the held-out real data that evaluation compares generated images against.

    A dataset that takes options (``--dataset-option key=value``; TrainConfig.dataset_options) sets
    `configure`: it receives the options as a dict of strings and returns the configured DatasetSpec (same
    name; shape, classes and a load bound to those options), raising GanzooError for a bad or unknown option.
    A dataset without `configure` takes no options. Use registry.dataset(name, options) to get the result.
    Declaring `options` (name -> Option) makes the core check names and types and hand `configure` typed
    values with the defaults filled in, as it does for variants and architectures.
    """

    name: str
    description: str
    shape: ImageShape
    load: Callable[[str, Optional[str], bool], ImageData]
    num_classes: Optional[int] = None
    train_split: str = "train"
    reference_split: str = "test"
    source: str = ""  # where the data comes from (a paper, a URL, a package)
    configure: Optional[Callable[[dict], "DatasetSpec"]] = None  # options -> configured spec (see above)
    options: dict = field(default_factory=dict)  # name -> Option (optional declaration, see above)


# ---- feature extractors (evaluation) ----

# calculate_metrics keyword under which evaluation passes a list to extractors that classify: such an extractor
# appends the IS-layer output (class logits, on the CPU) of every batch it processes, so that mode coverage
# comes from the same single pass as IS/FID/KID. torch-fidelity hands all its keywords to the extractor.
LOGITS_SINK = "ganzoo_logits_sink"


@dataclass(frozen=True)
class ExtractorRequest:
    """What evaluation tells a feature-extractor plugin when it asks for an extractor ready to use."""

    dataset: DatasetSpec  # configured with its options
    load: Callable[[str], ImageData]  # split name -> the whole split (root, download and options resolved)
    dataset_options: dict = field(default_factory=dict)
    weights_path: Optional[str] = None  # an explicit weights file (--inception-weights), else the plugin's default
    device: str = "cpu"
    progress: bool = True  # one-time work (training a classifier) may report itself on stderr


@dataclass(frozen=True)
class PreparedExtractor:
    """A feature extractor registered with torch-fidelity, its weights checked and hashed.

    Evaluation hands `fidelity_name`, `weights_path` and `feature_layers` to one
    ``torch_fidelity.calculate_metrics`` call; everything else goes into the protocol of every score.
    """

    fidelity_name: str  # the name it is registered under in torch-fidelity
    weights_path: str  # passed as feature_extractor_weights_path (already loaded safely and checked)
    weights_sha256: str
    feature_layers: dict  # {"isc": layer, "fid": layer, "kid": layer}
    scores_are: str  # how to label its IS/FID/KID, e.g. "classifier IS/FID/KID (... not comparable ...)"
    resize: str  # what the extractor does to the image size
    feature_dim: int = 0  # width of the FID/KID layer
    batch_size: int = 64
    num_classes: Optional[int] = None  # set when the IS layer gives the dataset's class logits (via LOGITS_SINK)
    info: dict = field(default_factory=dict)  # further protocol fields (classifier accuracy, official weights)


@dataclass(frozen=True)
class ExtractorSpec:
    """A feature extractor for IS, FID and KID.

    prepare(request) returns a PreparedExtractor (training or loading what it needs, registering its class with
    torch-fidelity) or raises GanzooError with a one-line reason (weights missing, corrupt, wrong shapes).
    """

    name: str
    description: str
    prepare: Callable[[ExtractorRequest], PreparedExtractor]
    paper: str = ""
    needs_labels: bool = False  # trained on the dataset's labels, so only for labelled datasets
