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
    # (B, K) class logits of an auxiliary classifier head (the `acgan` conditioning); None without one
    class_logits: Optional[torch.Tensor] = None


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
    "state": "the variant's own state (VariantSpec.state): a dict of named tensors that the loop checkpoints; "
             "update it in after_discriminator_step / after_generator_step (in place or by assigning a new tensor)",
    "d_optimizer": "the discriminator's torch optimizer (read its settings and moments; do not step it)",
    "real_labels": "class labels (int64, B) of this step's real batch in a conditional run (TrainConfig.condition); "
                   "else None. `discriminate` scores with these labels unless given others",
    "fake_labels": "the class labels (int64, B) the generated batch was asked for in a conditional run; else None",
}

# What the generator step offers its loss, by name (a loss that declares none of these names is called the first
# way, generator_loss(fake, real)). D's weights are frozen during G's step (requires_grad False): gradients flow
# through D to the generated images and on to G, never into D. `discriminate.using(weights)` scores with other
# weights (a look-ahead copy: ganzoo.unrolling.lookahead builds one, differentiably).
GENERATOR_STEP_ARGUMENTS = {
    "fake": "DiscriminatorOutput of the generated batch (differentiable with respect to G)",
    "real": "DiscriminatorOutput of the real batch, without gradients (computed only when declared without a "
            "default or when generator_needs_real is set; else None)",
    "fake_images": "the generated batch, with its graph to G",
    "real_images": "this step's real batch (the last discriminator step's)",
    "discriminate": STEP_ARGUMENTS["discriminate"],
    "discriminator": STEP_ARGUMENTS["discriminator"],
    "generator": STEP_ARGUMENTS["generator"],
    "d_optimizer": STEP_ARGUMENTS["d_optimizer"],
    "step": STEP_ARGUMENTS["step"],
    "rng": STEP_ARGUMENTS["rng"],
    "state": STEP_ARGUMENTS["state"],
    "real_labels": STEP_ARGUMENTS["real_labels"],
    "fake_labels": STEP_ARGUMENTS["fake_labels"],
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
    # Named tensors the variant keeps between steps (moving averages of D's outputs, say): name -> initial value.
    # The loop puts a copy on the training device, hands it to every piece that declares `state`, and saves it in
    # every checkpoint, so a resumed run continues from the values it had (not from the initial ones).
    state: dict = field(default_factory=dict)


# What an augmentation's `adjust` may ask for after each discriminator step: every step argument (its `state` is the
# augmentation's own), and the sign of D's verdict on each real input (ADA's r_t is their mean).
AUGMENT_ARGUMENTS = {
    **STEP_ARGUMENTS,
    "state": "the augmentation's own state (AugmentationSpec.state): named tensors the loop logs and checkpoints",
    "real_signs": "(B,) +1 where D called this step's (augmented) real input real, -1 where generated: the sign of "
                  "d_value(logits) - equilibrium (of the raw score for critics)",
}


@dataclass(frozen=True)
class AugmentationSpec:
    """A differentiable augmentation of every image D sees (hook ``ganzoo_augmentations``; ``--augment NAME``).

    The loop applies it in one place, steps.Discriminate: to real and generated images, in D's step and in G's step,
    and inside penalties (R1's gradient is taken through it), before packing.

      apply(images, state, rng) -> images: float B x C x H x W in [-1, 1] -> the same shape, differentiable with
          respect to `images`, every random parameter drawn per sample from `rng` (a torch.Generator on the images'
          device that the run checkpoints; draw the same amount whatever the state, so that runs stay reproducible).
      state: name -> initial value (a number): tensors the loop puts on the device, hands to `apply` and `adjust`,
          checkpoints, and logs (those named in `logged`, as log.csv columns ``augment_<name>``).
      adjust(**declared AUGMENT_ARGUMENTS): called after every discriminator step (ADA moves its p here).
      changes_orientation: the transforms of this configuration that can change what a digit is (flips, 90-degree
          rotations); training warns when a dataset that declares itself orientation-sensitive gets them.
    """

    name: str
    description: str
    apply: Callable[[torch.Tensor, dict, torch.Generator], torch.Tensor]
    paper: str = ""
    state: dict = field(default_factory=dict)
    adjust: Optional[Callable[..., Any]] = None
    logged: tuple[str, ...] = ()
    changes_orientation: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)  # name -> Option (``--augment-option key=value``)
    configure: Optional[Callable[[dict], "AugmentationSpec"]] = None


@dataclass(frozen=True)
class ImageShape:
    channels: int
    size: int  # square images: size x size
    kind = "image"

    @property
    def numel(self) -> int:
        return self.channels * self.size * self.size

    @property
    def dims(self) -> tuple[int, ...]:
        """One sample's tensor shape: (C, H, W)."""
        return (self.channels, self.size, self.size)

    def packed(self, m: int) -> "ImageShape":
        """What a discriminator judging packs of m samples sees (PacGAN): m times the channels."""
        return ImageShape(self.channels * m, self.size)

    def describe(self) -> str:
        return f"{self.channels}x{self.size}x{self.size} images"


@dataclass(frozen=True)
class VectorShape:
    """Samples that are vectors of `features` floats (2-D points, say), not images."""

    features: int
    kind = "vector"

    @property
    def numel(self) -> int:
        return self.features

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.features,)

    def packed(self, m: int) -> "VectorShape":
        return VectorShape(self.features * m)

    def describe(self) -> str:
        return f"{self.features}-dimensional vectors"


SampleShape = ImageShape | VectorShape


@dataclass(frozen=True)
class ArchitectureSpec:
    """A generator/discriminator pair.

    The generator maps (B, latent_dim) noise to (B, C, H, W) images in [-1, 1] (or, for vector data, to
    (B, features) floats). The discriminator maps such samples to a tuple (logits of shape (B,), features of shape
    (B, F)). With packing (TrainConfig.pack = m) the discriminator is built for shape.packed(m): m times the
    channels (or features); nothing else about it changes.

    A module of either network may define `check_batch(n) -> Optional[str]`: the loop asks it, before training,
    whether it can take batches of n samples (a minibatch-statistics layer cannot take fewer than its group).
    """

    name: str
    description: str
    build_generator: Callable[[int, SampleShape], nn.Module]  # (latent_dim, shape) -> module
    build_discriminator: Callable[[SampleShape], nn.Module]  # (shape) -> module
    paper: str = ""
    image_sizes: tuple[int, ...] = ()  # sizes it supports; empty means any
    data: tuple[str, ...] = ("image",)  # the kinds of samples it takes: "image", "vector"
    options: dict = field(default_factory=dict)  # name -> Option (``--arch-option key=value``)
    configure: Optional[Callable[[dict], "ArchitectureSpec"]] = None  # typed option values -> configured spec
    # The conditioning methods (ConditionSpec names) its networks can take; None: every one (the methods wrap G and
    # D from outside and need only D's (B, F) features). An architecture whose D has no usable features says ().
    conditions: Optional[tuple[str, ...]] = None


@dataclass(frozen=True)
class ConditionSpec:
    """A way to make G and D class-conditional (hook ``ganzoo_conditionings``; ``--condition NAME``).

    The core builds the architecture's networks as usual and hands them to the method, which wraps them:
      generator(build, latent_dim, num_classes) -> a module called as G(z, y): `build(d)` builds the architecture's
          generator for latents of size d (a method that joins an embedding to z builds it wider), or the method
          walks the built network (conditional BatchNorm); z is (B, latent_dim), y int64 (B,)
      discriminator(D, feature_dim, num_classes) -> a module called as D(x, y), returning (logits, features) or
          (logits, features, class_logits): D is the architecture's discriminator, returning (logits of shape (B,),
          features of shape (B, feature_dim)); a method adds to the score, or a head on the features
    discriminator_terms and generator_terms are extra loss terms (specs.Penalty: name, compute, weight, every) added
    to the variant's D and G objectives whatever the variant (ACGAN's class cross-entropy): compute declares the
    step arguments it needs (STEP_ARGUMENTS in D's step, GENERATOR_STEP_ARGUMENTS in G's: `real`, `fake` with
    their class_logits, `real_labels`, `fake_labels`), and each is logged unweighted in its own log.csv column.
    `record` holds facts a run config keeps about the method as configured (the ACGAN form, where the label enters).
    """

    name: str
    description: str
    generator: Callable[..., nn.Module]
    discriminator: Callable[..., nn.Module]
    discriminator_terms: tuple = ()  # of Penalty
    generator_terms: tuple = ()  # of Penalty
    paper: str = ""
    options: dict = field(default_factory=dict)  # name -> Option (``--condition-option key=value``)
    configure: Optional[Callable[[dict], "ConditionSpec"]] = None
    record: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ImageData:
    """A whole split in memory: uint8 images (N, C, H, W) (or, for a dataset of vectors, float32 (N, features))
    and, for labelled data, int64 labels (N,)."""

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
    shape: SampleShape
    load: Callable[[str, Optional[str], bool], ImageData]
    num_classes: Optional[int] = None
    train_split: str = "train"
    reference_split: str = "test"
    source: str = ""  # where the data comes from (a paper, a URL, a package)
    configure: Optional[Callable[[dict], "DatasetSpec"]] = None  # options -> configured spec (see above)
    options: dict = field(default_factory=dict)  # name -> Option (optional declaration, see above)
    # The metrics a benchmark scores it with unless told otherwise (names of MetricSpecs); empty: IS/FID/KID
    # with precision/recall ("fidelity"), plus "class-coverage" for labelled image datasets.
    metrics: tuple[str, ...] = ()
    # Facts about the data that metrics read: e.g. {"mixture": {"means": [[x, y], ...], "std": 0.01}} for a
    # mixture of Gaussians, {"stacked": {"source": "mnist5k", "channels": 3}} for Stacked MNIST.
    metadata: dict = field(default_factory=dict)
    # A flip or a 90-degree rotation changes what an image is (a 6 becomes a 9): augmentations that apply one get a
    # warning (AugmentationSpec.changes_orientation).
    orientation_sensitive: bool = False


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
    # A classifier of the dataset's classes sets this: uint8 N x C x H x W images (the dataset's own channels) ->
    # (N, num_classes) float logits on the CPU. Metrics that need "the dataset's reference classifier" use it.
    classify: Optional[Callable[[torch.Tensor], torch.Tensor]] = None


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


# ---- metrics (evaluation) ----

BETTER = ("lower", "higher", None)  # None: a by-product that is reported, not ranked (IS's spread over splits)
METRIC_NEEDS = {
    "samples": "the generated samples (every metric gets them)",
    "reference": "the real reference samples (the dataset's reference split, or a subset of it)",
    "labels": "a labelled dataset (its reference labels; the class each sample was asked for, in conditional runs)",
    "classifier": "the dataset's reference classifier (the `classifier` extractor, trained on its labels)",
    "features": "a feature extractor (the benchmark's --extractor, else the dataset's default)",
}


@dataclass(frozen=True)
class MetricColumn:
    """One number a metric reports: its record column, how the leaderboard titles and formats it, and which way is
    better. `board` is the leaderboard's name for the column (default: `name`), `shown=False` keeps a column
    out of the tables (it stays in the records and the CSV)."""

    name: str  # a record column: lowercase letters, digits, underscores
    header: str
    better: Optional[str] = "lower"
    format: str = ".3g"
    board: str = ""
    shown: bool = True

    @property
    def board_name(self) -> str:
        return self.board or self.name


@dataclass(frozen=True)
class Reference:
    """The real samples generated ones are compared with (a dataset's reference split, maybe a seeded subset of it,
    or what a real-vs-real row holds out); `identity` is a string that changes whenever they do (cache keys)."""

    samples: torch.Tensor  # uint8 images N x C x H x W, or float32 vectors N x F
    labels: Optional[torch.Tensor]
    split: str
    subset: str  # "all 1000", "random 500 of 1000 (seed 0)"
    identity: str


@dataclass(frozen=True)
class ReferenceClassifier:
    """A dataset's reference classifier, ready to use: logits(uint8 images of that dataset's shape) -> (N, K)."""

    dataset: str
    logits: Callable[[torch.Tensor], torch.Tensor]
    num_classes: int
    weights_sha256: str
    info: dict = field(default_factory=dict)  # accuracy on the held-out split, training facts


@dataclass(frozen=True)
class MetricRequest:
    """What evaluation tells a metric plugin when it asks for a metric ready to score (MetricSpec.prepare).

    `reference`, `features` and `classifier` are shared between the metrics of one evaluation and prepared on first
    use: `features()` gives the chosen feature extractor (an object with `.prepared`, a PreparedExtractor, and
    `.features(images, layer)` -> (N, F) floats), `classifier(dataset=None, options=None)` a ReferenceClassifier
    of this dataset (or of another one, as Stacked MNIST classifies each channel with MNIST's)."""

    dataset: DatasetSpec  # configured
    dataset_options: dict
    load: Callable[[str], ImageData]  # split -> the whole split
    reference: Callable[[], Reference]
    features: Callable[[], Any]
    classifier: Callable[..., ReferenceClassifier]
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    cache: bool = True  # may keep features of the real side on disk between evaluations


@dataclass(frozen=True)
class MetricSamples:
    """What a prepared metric scores: the generated samples (as the dataset stores its own: uint8 images or float32
    vectors), the class each was asked for when the generator is conditional (else None), and the seed."""

    samples: torch.Tensor
    labels: Optional[torch.Tensor] = None
    seed: int = 0


@dataclass(frozen=True)
class MetricResult:
    """A metric's numbers (one per declared column) and the protocol fields they were computed under. Name the
    protocol fields so that no other metric's can clash (e.g. prefixed by the metric's name)."""

    values: dict
    protocol: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    """A way to score generated samples (hook ``ganzoo_metrics``).

    prepare(request) returns a function MetricSamples -> MetricResult, doing once what every score shares (loading
    the reference, preparing an extractor); evaluation calls it for every run and every point of an FID curve.
    `applies(dataset)` says why the metric does not apply to a dataset (None: it does); the `needs` it declares
    from METRIC_NEEDS are checked too ("labels" and "classifier" need a labelled dataset). `samples` fixes how
    many generated samples the metric scores (a published protocol: 2,500 points); None takes the evaluation's
    n_fake. `comparable` names the protocol fields that must agree before two scores are ranked (ganzoo compare).
    """

    name: str
    description: str
    columns: tuple[MetricColumn, ...]
    prepare: Callable[[MetricRequest], Callable[[MetricSamples], MetricResult]]
    applies: Optional[Callable[[DatasetSpec], Optional[str]]] = None
    needs: tuple[str, ...] = ("samples",)
    samples: Optional[int] = None
    comparable: tuple[str, ...] = ()
    paper: str = ""
    options: dict = field(default_factory=dict)  # name -> Option (``--metric-option name.key=value``)
    configure: Optional[Callable[[dict], "MetricSpec"]] = None
    rank_by: str = ""  # the column leaderboards rank by when this metric comes first (default: its first ranked one)

    @property
    def primary(self) -> Optional[str]:
        return self.rank_by or next((c.name for c in self.columns if c.better), None)
