"""Evaluation: generated samples scored by metric plugins, each score carrying the protocol it was computed under.

    evaluate(run)                    a trained run's samples against its dataset's reference split
    evaluate_images(fake, dataset)   any samples (uint8 N x C x H x W images, float32 N x F vectors) likewise
    real_reference(dataset)          real training samples scored the same way: what "perfect" scores

Metrics are plugins (hook ``ganzoo_metrics``, specs.MetricSpec), registered like variants: the built-in ones are
`fidelity` (IS, FID, KID, precision and recall from one torch-fidelity pass), `class-coverage` (classes the
reference classifier finds), `mixture-modes` (2-D mixtures of Gaussians) and `stacked-modes` (Stacked MNIST).
A dataset names its default metrics (DatasetSpec.metrics; images: fidelity, plus class-coverage when labelled);
`metrics=` (``--metrics``) chooses others, and a metric that does not apply to a dataset is refused naming the
ones that do. What metrics share is prepared once per Scorer and handed out on demand: the real reference, the
feature extractor (a plugin too, hook ``ganzoo_feature_extractors``: the offline `classifier` or the standard
`inception-v3-compat`) and the dataset's reference classifier.

Scores from different protocols are not comparable, so every EvalResult records the protocol (each metric's own
fields, sample counts, reference split and subset, seed, versions) and which protocol fields must agree before
two scores are ranked against each other.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import torch

from . import __version__, caches, registry
from .config import normalize_dataset_options
from .data import load_split
from .devices import resolve_device
from .errors import GanzooError
from .files import atomic_write, read_json, write_json
from .specs import (DatasetSpec, ExtractorRequest, MetricColumn, MetricRequest, MetricResult, MetricSamples,
                    PreparedExtractor, Reference, ReferenceClassifier)

DEFAULT_N_FAKE = 5000
REFERENCE_CLASSIFIER = "classifier"  # the extractor whose network is "the dataset's reference classifier"
# Columns every record of the first releases held (IS/FID/KID and class coverage), for reading old results.
METRICS = ("is_mean", "is_std", "fid", "kid_mean", "kid_std")
COVERAGE = ("classes_covered", "class_kl")
# Protocol fields that every evaluation records itself and that must agree before two scores are ranked.
CORE_COMPARABLE = ("n_fake", "n_real", "reference_split")


@dataclass
class EvalResult:
    """Scores (`metrics`: column -> value) and the `protocol` they were computed under (flat: names to strings and
    numbers); `columns` describes each score (its metric, header, direction, format), `errors` names the metrics
    that failed (when evaluation was asked to keep going), and `comparable` the protocol fields that must agree."""

    metrics: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    comparable: list[str] = field(default_factory=list)
    rank_by: Optional[str] = None  # the column a leaderboard ranks these scores by (the first metric's primary)

    def to_record(self) -> dict[str, Any]:
        """One flat dict, ready to be a pandas row: the metrics, `protocol.<field>` for every protocol field, and
        `metric_info` (how to read the columns), so that a leaderboard needs no plugin to render them."""
        return {**self.metrics, **{f"protocol.{k}": v for k, v in self.protocol.items()},
                "metric_info": {"columns": self.columns, "comparable": self.comparable, "rank_by": self.rank_by,
                                "errors": self.errors}}

    def summary(self) -> str:
        """Human-readable scores and protocol (what `ganzoo eval` prints)."""
        p = self.protocol
        lines = [p["scores_are"]] if p.get("scores_are") else []
        # scores on the offline classifier's features are "classifier FID" etc., never to be read as Inception's
        kind = "classifier " if p.get("extractor_kind") == "classifier" else ""
        by_metric: dict[str, list[str]] = {}
        for name, column in self.columns.items():
            value = self.metrics.get(name, math.nan)
            text = "-" if not isinstance(value, (int, float)) or value != value else f"{value:{column['format']}}"
            header = f"{kind}{column['header']}" if column.get("features") else column["header"]
            by_metric.setdefault(column["metric"], []).append(f"{header} {text}")
        for metric, cells in by_metric.items():
            lines.append(f"  {metric}: " + "  ".join(cells))
        for metric, error in self.errors.items():
            lines.append(f"  {metric}: failed: {error}")
        lines.append("protocol:")
        width = max(map(len, p), default=0)
        lines += [f"  {k:<{width}}  {v}" for k, v in p.items()]
        return "\n".join(lines)


def default_extractor(dataset: DatasetSpec) -> str:
    """The offline classifier for labelled datasets, else the standard Inception (which needs its weights)."""
    return "classifier" if dataset.num_classes else "inception-v3-compat"


# What a conditional run is scored with besides its dataset's metrics (plugins/conditional_metrics.py).
CONDITIONAL_METRICS = ("class-accuracy", "intra-fid", "cas", "class-prc")


def default_metrics(dataset: DatasetSpec, conditional: bool = False) -> tuple[str, ...]:
    """What a dataset is scored with unless told otherwise: its own list, else IS/FID/KID with precision/recall,
    and the classes its reference classifier finds when it is labelled; for a conditional run (or a leaderboard
    that holds one) also the conditional metrics that apply."""
    if dataset.metrics:
        names = tuple(dataset.metrics)
    else:
        names = ("fidelity", "class-coverage") if dataset.num_classes else ("fidelity",)
    if conditional:
        names += tuple(m for m in CONDITIONAL_METRICS if m not in names and m in registry.entries("metric")
                       and metric_problem(m, dataset) is None)
    return names


def metric_problem(name: str, dataset: DatasetSpec) -> Optional[str]:
    """Why metric `name` cannot score `dataset` (None when it can): its `applies`, and what it `needs`."""
    spec = registry.get("metric", name).spec
    if ("labels" in spec.needs or "classifier" in spec.needs) and not dataset.num_classes:
        return f"it needs a labelled dataset and '{dataset.name}' has no labels"
    if spec.applies is not None:
        try:
            why = spec.applies(dataset)
        except Exception as exc:  # noqa: BLE001 - third-party code
            return f"its applies() raised {type(exc).__name__}: {exc}"
        if why:
            return str(why)
    return None


def check_metrics(names: Optional[tuple[str, ...] | list[str]], dataset: DatasetSpec,
                  conditional: bool = False) -> tuple[str, ...]:
    """The metrics to score `dataset` with (None: its defaults, with the conditional ones when `conditional`), each
    known and applicable, or a one-line error naming the metrics that do apply."""
    names = tuple(names) if names else default_metrics(dataset, conditional)
    if len(set(names)) != len(names):
        raise GanzooError(f"metrics repeat: {', '.join(names)}")
    for name in names:
        registry.get("metric", name)  # an unknown name lists the available ones
        why = metric_problem(name, dataset)
        if why:
            fit = [m for m in registry.entries("metric") if metric_problem(m, dataset) is None]
            raise GanzooError(f"metric '{name}' does not apply to dataset '{dataset.name}' "
                              f"({dataset.shape.describe()}): {why}; metrics that apply: {', '.join(fit) or 'none'}")
    return names


def parse_metrics(value: Any) -> Optional[tuple[str, ...]]:
    """--metrics a,b (or a list from TOML or Python) -> a tuple of names; None and "" mean each dataset's default."""
    if value is None or value == "" or value == ():
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise GanzooError(f"metrics must be a comma-separated list of names, got {value!r}")
    return tuple(value) or None


class _Images(torch.utils.data.Dataset):
    """uint8 N x 3 x H x W in memory, one image per item, as torch-fidelity's DataLoader wants."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x C x H x W on the CPU as torch-fidelity wants it: grayscale tiled to 3 channels."""
    images = images.cpu()
    if images.shape[1] not in (1, 3):
        raise GanzooError(f"images have {images.shape[1]} channels; feature extractors take 1 (grayscale, tiled to "
                          "3) or 3")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class Features:
    """A feature extractor prepared for one dataset (trained or loaded, registered with torch-fidelity, weights
    checked and hashed), shared by the metrics of an evaluation: `fidelity` hands it to torch-fidelity, other
    metrics call `features(images)` for the same features FID uses."""

    def __init__(self, name: str, origin: str, prepared: PreparedExtractor, device: torch.device, cache: bool,
                 dataset: DatasetSpec, options: dict):
        self.name, self.origin, self.prepared, self.device = name, origin, prepared, device
        self.cache, self.dataset, self.options = cache, dataset, options

    def features(self, images: torch.Tensor, layer: str = "fid") -> torch.Tensor:
        """(N, F) float features of uint8 images at the layer FID uses (or `layer`: "isc", "kid", a name)."""
        import torch_fidelity.utils as fidelity_utils

        p = self.prepared
        name = p.feature_layers.get(layer, layer)
        cuda = self.device.type == "cuda"
        extractor = fidelity_utils.create_feature_extractor(p.fidelity_name, [name], cuda=cuda, verbose=False,
                                                            feature_extractor_weights_path=p.weights_path)
        with torch.random.fork_rng(devices=[self.device.index or 0] if cuda else []):
            found = fidelity_utils.get_featuresdict_from_dataset(_Images(as_rgb(images)), extractor, p.batch_size,
                                                                cuda, True, False)
        return found[name].float()

    def protocol(self) -> dict[str, Any]:
        p = self.prepared
        return {"scores_are": p.scores_are, "extractor": self.name,
                "extractor_kind": "classifier" if p.num_classes else "feature network",
                "extractor_plugin": self.origin, "extractor_weights_sha256": p.weights_sha256,
                "feature_layers": ", ".join(f"{m}={layer}" for m, layer in p.feature_layers.items()),
                "feature_dim": p.feature_dim, **p.info}

    def cache_name(self, reference: Reference) -> Optional[str]:
        """The name torch-fidelity caches the real side's features and statistics under (None: no caching). The
        weights hash is part of it, so two weights files (or two classifiers) never share an entry."""
        if not self.cache:
            return None
        p = self.prepared
        identity = json.loads(reference.identity) + [self.name, p.fidelity_name, p.weights_sha256, p.feature_layers]
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]
        readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.dataset.name}-{reference.split}")
        return f"ganzoo-{readable}-{digest}"


class Scorer:
    """What stays fixed between evaluations against one dataset: its metrics, prepared once (the reference loaded,
    an extractor prepared, a classifier trained), ready to score any number of sample sets.

    evaluate_images builds one per call; training builds one and scores the generator at every eval point.
    `extractor` (None: the dataset's default) is the feature extractor of the metrics that use features;
    `reference` replaces the reference split (a real-vs-real row holds out its own half).
    """

    def __init__(self, dataset: str, extractor: Optional[str] = None, n_real: Optional[int] = None, seed: int = 0,
                 device: str = "auto", inception_weights: Optional[str | Path] = None,
                 dataset_options: Optional[dict] = None, data_root: Optional[str] = None, download: bool = False,
                 progress: bool = True, cache: bool = True, reference: Optional[tuple[torch.Tensor, str]] = None,
                 metrics: Optional[tuple[str, ...] | list[str]] = None, metric_options: Optional[dict] = None,
                 conditional: bool = False):
        self.device = resolve_device(device)
        self.options = normalize_dataset_options(dataset_options)
        self.dataset = registry.dataset(dataset, self.options)
        self.extractor = extractor or default_extractor(self.dataset)
        self.n_real, self.seed, self.cache, self.progress = n_real, seed, cache, progress
        self.data_root, self.download = data_root, download
        self.inception_weights = str(inception_weights) if inception_weights else None
        self._given_reference = reference
        self._reference: Optional[Reference] = None
        self._features: Optional[Features] = None
        self._classifiers: dict[str, ReferenceClassifier] = {}
        self.names = check_metrics(metrics, self.dataset, conditional)
        metric_options = metric_options or {}
        stray = sorted(set(metric_options) - set(self.names))
        if stray:
            raise GanzooError(f"metric options for {', '.join(stray)}, which this evaluation does not compute "
                              f"(metrics: {', '.join(self.names)})")
        self.specs = {name: registry.configure("metric", registry.get("metric", name).spec, metric_options.get(name))
                      for name in self.names}
        self.metric_options = {name: registry.option_values("metric", registry.get("metric", name).spec,
                                                            metric_options.get(name)) for name in self.names}
        request = MetricRequest(self.dataset, dict(self.options), self._load, self.reference, self.features,
                                self.classifier, seed, str(self.device), progress, cache)
        self.scorers = {}
        for name, spec in self.specs.items():
            with torch.random.fork_rng(devices=[]):  # preparing may train a classifier: leave the caller's RNG
                self.scorers[name] = _prepare_metric(name, spec, request)

    # ---- what the metrics share, prepared on first use ----

    def _load(self, split: str):
        return load_split(self.dataset.name, split, self.data_root, self.download, self.options)

    def reference(self) -> Reference:
        """The real samples the generated ones are compared with: the reference split (a seeded subset of n_real
        of it), or what real_reference holds out."""
        if self._reference is None:
            name = self.dataset.name
            if self._given_reference is None:
                split = self.dataset.reference_split
                data = self._load(split)
                samples, subset = _pick(data.images, self.n_real, self.seed, "n_real", f"{name} '{split}'")
                labels = _pick(data.labels, self.n_real, self.seed, "n_real", "")[0] if data.labels is not None \
                    else None
                identity = [name, self.options, split, data.info, subset]
            else:
                samples, split = self._given_reference
                samples, subset = _pick(samples, self.n_real, self.seed, "n_real", f"{name} '{split}'")
                labels = None
                identity = [name, self.options, split,
                            hashlib.sha256(samples.contiguous().numpy().tobytes()).hexdigest()]
            self._reference = Reference(self._checked(samples, f"the real '{split}' samples"), labels, split, subset,
                                        json.dumps(identity, sort_keys=True, default=str))
        return self._reference

    def features(self) -> Features:
        """The feature extractor (self.extractor), prepared for this dataset."""
        if self._features is None:
            entry = registry.get("extractor", self.extractor)
            if self.dataset.shape.kind != "image":
                raise GanzooError(f"feature extractor '{self.extractor}' reads images; dataset '{self.dataset.name}' "
                                  f"has {self.dataset.shape.describe()}")
            request = ExtractorRequest(self.dataset, self._load, dict(self.options), self.inception_weights,
                                       str(self.device), self.progress)
            with torch.random.fork_rng(devices=[]):
                prepared = entry.spec.prepare(request)
            if not isinstance(prepared, PreparedExtractor):
                raise GanzooError(f"extractor '{self.extractor}' ({entry.plugin} ({entry.origin})) returned "
                                  f"{type(prepared).__name__} from prepare, expected PreparedExtractor")
            self._features = Features(self.extractor, f"{entry.plugin} ({entry.origin})", prepared, self.device,
                                      self.cache, self.dataset, self.options)
        return self._features

    def classifier(self, dataset: Optional[str] = None, options: Optional[dict] = None) -> ReferenceClassifier:
        """The reference classifier of this dataset (or of `dataset` with `options`): the `classifier` extractor's
        network, trained once on that dataset's labels and cached."""
        name = dataset or self.dataset.name
        opts = normalize_dataset_options(options) if dataset else self.options
        key = json.dumps([name, opts], sort_keys=True)
        if key not in self._classifiers:
            spec = registry.dataset(name, opts)
            if not spec.num_classes:
                raise GanzooError(f"a reference classifier needs a labelled dataset; '{name}' has no labels")
            entry = registry.get("extractor", REFERENCE_CLASSIFIER)

            def load(split: str):
                return load_split(name, split, self.data_root, self.download, opts)

            request = ExtractorRequest(spec, load, dict(opts), None, str(self.device), self.progress)
            with torch.random.fork_rng(devices=[]):
                prepared = entry.spec.prepare(request)
            if not isinstance(prepared, PreparedExtractor) or prepared.classify is None:
                raise GanzooError(f"extractor '{REFERENCE_CLASSIFIER}' ({entry.origin}) gives no classify function, "
                                  "which metrics that need the reference classifier use")
            self._classifiers[key] = ReferenceClassifier(name, prepared.classify, int(prepared.num_classes),
                                                         prepared.weights_sha256, dict(prepared.info))
        return self._classifiers[key]

    @property
    def prepared(self) -> PreparedExtractor:
        return self.features().prepared

    @property
    def real_cache_name(self) -> Optional[str]:
        return self.features().cache_name(self.reference())

    # ---- scoring ----

    def samples_needed(self, n_fake: int) -> int:
        """How many samples to generate so that every metric gets its count (a fixed protocol count, or n_fake)."""
        return max([n_fake] + [spec.samples for spec in self.specs.values() if spec.samples])

    def score(self, fake: Any, seed: int = 0, source: str = "images", context: Optional[dict] = None,
              labels: Optional[torch.Tensor] = None, keep_going: bool = False,
              n_fake: Optional[int] = None, fewer: bool = False) -> EvalResult:
        """Every metric of `fake` (uint8 images or float32 vectors of the dataset's shape), with the protocol.

        Metrics whose protocol fixes a count score the first that many samples (all there are, if fewer and
        `fewer`: a small real split scored as if generated); the others the first n_fake (all of them by default).
        The protocol records each count. A metric that fails raises (a one-line GanzooError naming it) unless keep_going, where
        its error is recorded in EvalResult.errors and the other metrics are still reported."""
        fake = self._checked(fake, "the generated samples")
        n_fake = len(fake) if n_fake is None else n_fake
        _check_count(n_fake, "generated samples")
        started = time.perf_counter()
        values: dict[str, float] = {}
        protocol: dict[str, Any] = {}
        columns: dict[str, dict] = {}
        errors: dict[str, str] = {}
        comparable = list(CORE_COMPARABLE)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        for name, spec in self.specs.items():
            for column in spec.columns:
                columns[column.name] = {**asdict(column), "board": column.board_name, "metric": name,
                                        "features": "features" in spec.needs}
            comparable += [f for f in spec.comparable if f not in comparable]
            n = spec.samples or n_fake
            if fewer:
                n = min(n, len(fake))
            try:
                if n > len(fake):
                    raise GanzooError(f"it scores {n} samples, and only {len(fake)} were generated")
                with torch.random.fork_rng(devices=devices):  # mid-training, the training RNG must not move
                    result = self.scorers[name](MetricSamples(fake[:n], None if labels is None else labels[:n], seed))
                result = _checked_result(name, spec, result)
            except Exception as exc:  # noqa: BLE001 - a metric plugin's failure is reported by name
                message = _failure(name, exc)
                if not keep_going:
                    raise GanzooError(message) from None
                errors[name] = message
                values.update({c.name: math.nan for c in spec.columns})
                continue
            clash = sorted(set(result.protocol) & set(protocol))
            if clash:
                raise GanzooError(f"metric '{name}' records protocol field(s) {', '.join(clash)}, which another "
                                  "metric of this evaluation records too; a metric should prefix its fields")
            values.update(result.values)
            protocol.update(result.protocol)
            if spec.samples:
                protocol[f"{name.replace('-', '_')}.samples"] = n  # e.g. mixture_modes.samples
        reference = self._reference
        common = {
            "dataset": self.dataset.name,
            "dataset_options": json.dumps(self.options, sort_keys=True) if self.options else "",
            "metrics": ", ".join(self.names),
            **({"metric_options": json.dumps(self.metric_options, sort_keys=True)}
               if any(self.metric_options.values()) else {}),
            "generated_from": source, **(context or {}),
            "n_fake": n_fake,
            **({"n_real": len(reference.samples), "reference_split": reference.split,
                "real_subset": reference.subset} if reference is not None else {}),
            "seed": seed,
            "torch_version": str(torch.__version__), "ganzoo_version": __version__, "device": str(self.device),
            "eval_seconds": round(time.perf_counter() - started, 3),
            "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        order = ["scores_are", "extractor", "extractor_kind", "extractor_plugin", "extractor_weights_sha256",
                 "feature_layers", "feature_dim"]
        merged = {k: protocol[k] for k in order if k in protocol}
        merged.update({k: v for k, v in protocol.items() if k not in merged and k not in common})
        merged.update({k: v for k, v in common.items() if k not in merged})
        for k in ("n_fake", "n_real", "reference_split", "real_subset"):  # core facts, unless a metric refines them
            if k in common and k not in protocol:
                merged[k] = common[k]
        first = next(iter(self.specs.values()))
        return EvalResult(values, merged, columns, errors, comparable, first.primary)

    def _checked(self, samples: Any, what: str) -> torch.Tensor:
        """Samples as the dataset stores its own: uint8 N x C x H x W images, or float32 N x F vectors."""
        shape = self.dataset.shape
        dtype = torch.uint8 if shape.kind == "image" else torch.float32
        wanted = f"{str(dtype).replace('torch.', '')} N x {' x '.join(map(str, shape.dims))}"
        if not isinstance(samples, torch.Tensor):
            try:
                samples = torch.as_tensor(samples)
            except (TypeError, ValueError, RuntimeError):
                raise GanzooError(f"{what} must be a {wanted} tensor, got {type(samples).__name__}") from None
        if samples.dtype != dtype or samples.dim() != 1 + len(shape.dims):
            raise GanzooError(f"{what} must be {wanted}, got {samples.dtype} {tuple(samples.shape)}")
        if tuple(samples.shape[1:]) != shape.dims:
            layout = " (C x H x W)" if shape.kind == "image" else ""
            raise GanzooError(f"{what} are {' x '.join(map(str, samples.shape[1:]))}{layout}, but dataset "
                              f"'{self.dataset.name}' has {' x '.join(map(str, shape.dims))}: sizes and channels "
                              "must match")
        if dtype == torch.float32 and not torch.isfinite(samples).all():
            raise GanzooError(f"{what} hold values that are not finite numbers")
        return samples.cpu()


def _prepare_metric(name: str, spec, request: MetricRequest):
    try:
        scorer = spec.prepare(request)
    except GanzooError:
        raise
    except Exception as exc:  # noqa: BLE001 - third-party code
        raise GanzooError(_failure(name, exc)) from None
    if not callable(scorer):
        raise GanzooError(f"metric '{name}': prepare must return a function of MetricSamples, got "
                          f"{type(scorer).__name__}")
    return scorer


def _failure(name: str, exc: BaseException) -> str:
    """One line naming the metric, and for a bug (not a GanzooError) where it was raised."""
    if isinstance(exc, GanzooError):
        text = str(exc)
        return text if text.startswith(f"metric '{name}'") else f"metric '{name}' failed: {text}"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"metric '{name}' failed: {type(exc).__name__}: {first}{where}"


def _checked_result(name: str, spec, result: Any) -> MetricResult:
    if not isinstance(result, MetricResult):
        raise GanzooError(f"metric '{name}' returned {type(result).__name__}, expected MetricResult")
    declared = [c.name for c in spec.columns]
    if set(result.values) != set(declared):
        raise GanzooError(f"metric '{name}' returned values for {', '.join(sorted(result.values)) or 'nothing'}; "
                          f"it declares {', '.join(declared)}")
    values = {}
    for column in declared:
        value = result.values[column]
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GanzooError(f"metric '{name}' column {column} must be a number, got {type(value).__name__}")
        values[column] = value
    return MetricResult(values, dict(result.protocol))


# ---------------------------------------------------------------------------------------------------------
# the public API


def evaluate_images(fake: Any, dataset: str, extractor: Optional[str] = None, *, n_real: Optional[int] = None,
                    seed: int = 0, device: str = "auto", inception_weights: Optional[str | Path] = None,
                    dataset_options: Optional[dict] = None, data_root: Optional[str] = None,
                    progress: bool = True, metrics: Optional[list[str]] = None,
                    metric_options: Optional[dict] = None) -> EvalResult:
    """Score samples (uint8 N x C x H x W images or float32 N x F vectors, CPU) against `dataset`'s reference
    split (all of it, or a seeded subset of n_real) with `metrics` (None: the dataset's defaults)."""
    scorer = Scorer(dataset, extractor, n_real, seed, device, inception_weights, dataset_options, data_root,
                    progress=progress, metrics=metrics, metric_options=metric_options)
    return scorer.score(fake, seed)


def evaluate(run, extractor: Optional[str] = None, n_fake: int = DEFAULT_N_FAKE, n_real: Optional[int] = None,
             seed: int = 0, device: str = "auto", inception_weights: Optional[str | Path] = None, *,
             progress: bool = True, metrics: Optional[list[str]] = None, metric_options: Optional[dict] = None,
             keep_going: bool = False) -> EvalResult:
    """Score a trained run (a Run or its folder): n_fake samples from latent seed `seed` (more when a metric's
    protocol fixes a larger count) against the reference split of the dataset it was trained on. The protocol
    adds the run's steps and training wall time."""
    from .sampling import generate, load_generator, run_labels

    _check_count(n_fake, "n_fake")
    generator, run = load_generator(run, device)
    config = run.config
    conditional = config.condition != "none"
    scorer = Scorer(config.dataset, extractor, n_real, seed, device, inception_weights, config.dataset_options,
                    config.data_root, progress=progress, metrics=metrics, metric_options=metric_options,
                    conditional=conditional)
    # Exactly n_fake latents unless a metric's protocol fixes more: the first n_fake are then the same vectors. A
    # conditional generator is asked for labels that follow the training split's class counts (seeded), so its
    # unconditional metrics see the data's class mix; the conditional metrics score them against those labels.
    n = scorer.samples_needed(n_fake)
    labels = run_labels(run, n, seed)
    samples = generate(generator, n, config.latent_dim, seed, labels=labels)
    context = {"run": str(run.path), "run_key": config.key(), "variant": config.variant, "arch": config.arch,
               "steps_trained": run.step, "run_status": run.status,
               "train_wall_time_s": run.stats.get("wall_time_s"),
               **({"condition": config.condition, "labels": "following the training split's class counts, "
                   f"shuffled by seed {seed}"} if conditional else {})}
    return scorer.score(samples, seed, source=f"generator of run {run.path} at step {run.step}, latent seed {seed}",
                        context=context, keep_going=keep_going, n_fake=n_fake, labels=labels)


def real_reference(dataset: str, extractor: Optional[str] = None, n: Optional[int] = None, seed: int = 0, *,
                   n_real: Optional[int] = None, device: str = "auto", inception_weights: Optional[str | Path] = None,
                   dataset_options: Optional[dict] = None, data_root: Optional[str] = None,
                   progress: bool = True, metrics: Optional[list[str]] = None,
                   metric_options: Optional[dict] = None, keep_going: bool = False,
                   conditional: bool = False) -> EvalResult:
    """Real data scored as if generated: n samples of the training split (default: as many as evaluate
    generates, or the whole split if smaller) against the reference split, through the same pipeline.

    This is the row that shows what a perfect generator of the training data would score under the protocol.
    A dataset whose training and reference splits are the same is cut into two disjoint seeded halves.
    Note: the reference classifier was trained on the training split, so its IS here is a little optimistic.
    With `conditional`, the conditional metrics score the real samples against their own labels too: what a perfect
    class-conditional generator would score.
    """
    options = normalize_dataset_options(dataset_options)
    spec = registry.dataset(dataset, options)
    split = load_split(dataset, spec.train_split, data_root, False, options)
    train, train_labels = split.images, split.labels
    reference = None
    if spec.train_split == spec.reference_split:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        half = len(train) // 2
        reference = (train[order[half:].sort().values], f"{spec.reference_split} (second half, seed {seed})")
        train = train[order[:half].sort().values]
        train_labels = train_labels[order[:half].sort().values] if train_labels is not None else None
    scorer = Scorer(dataset, extractor, n_real, seed, device, inception_weights, options, data_root,
                    progress=progress, reference=reference, metrics=metrics, metric_options=metric_options,
                    conditional=conditional)
    count = min(DEFAULT_N_FAKE, len(train)) if n is None else n
    needed = min(scorer.samples_needed(count), len(train))  # a metric's fixed count, where the split has enough
    samples, subset = _pick(train, needed, seed, "n", f"{dataset} '{spec.train_split}'")
    labels = None
    if conditional and train_labels is not None:
        labels = _pick(train_labels, needed, seed, "n", "")[0]  # the same subset's labels
    return scorer.score(samples, seed, source=f"real samples: {dataset} '{spec.train_split}', {subset}",
                        context={"real_vs_real": True}, keep_going=keep_going, n_fake=min(count, needed), fewer=True,
                        labels=labels)


# ---------------------------------------------------------------------------------------------------------
# evaluation during training (TrainConfig.eval_every)

EVAL_SEED = 0  # latent and torch-fidelity seed of in-training scores: every point of a curve sees the same noise


class TrainingEvaluator:
    """Scores the generator every eval_every steps and at the last step; one eval.csv row per evaluation.

    Built before the first step, so that a missing weights file or an unlabelled dataset fails before any
    training and the metrics are prepared (a classifier trained) once. On resume, rows past the checkpoint's
    step are dropped, as in log.csv; a resume with another extractor is refused rather than mixed into one curve.
    """

    def __init__(self, config, out: Path, device: Any, keep_until: int, class_counts: Optional[list] = None):
        from .runs import EVAL_FILE, EVAL_PROTOCOL_FILE, resumable_rows

        self.scorer = Scorer(config.dataset, config.eval_extractor, None, EVAL_SEED, str(device),
                             config.inception_weights, config.dataset_options, config.data_root, config.download,
                             metrics=config.eval_metrics or None)
        self.n, self.latent_dim = config.eval_samples, config.latent_dim
        self.labels = None  # a conditional run is scored on samples whose labels follow the training split's counts
        if class_counts is not None:
            from .conditioning import proportional_labels

            self.labels = proportional_labels(class_counts, self.scorer.samples_needed(self.n), EVAL_SEED)
        self.path, self.protocol_path = out / EVAL_FILE, out / EVAL_PROTOCOL_FILE
        self.metric_columns = [c.name for spec in self.scorer.specs.values() for c in spec.columns]
        self.columns = ("step",) + tuple(self.metric_columns)
        self.rank_by = next(iter(self.scorer.specs.values())).primary
        header = ",".join(self.columns) + "\n"
        lines = [header]
        if keep_until > 0 and self.path.is_file():
            # A curve keeps the columns it started with: one begun before a metric added columns (precision and
            # recall) or reordered them resumes with its own header.
            first = self.path.read_text().split("\n", 1)[0].split(",")
            if first[0] == "step" and len(first) > 1 and set(first[1:]) <= set(self.metric_columns):
                self.columns = tuple(first)
                header = ",".join(self.columns) + "\n"
                lines = [header]
        if keep_until > 0 and (self.path.is_file() or self.protocol_path.is_file()):
            stored = read_json(self.protocol_path, "eval protocol") if self.protocol_path.is_file() else {}
            old = (stored.get("extractor"), stored.get("extractor_weights_sha256"))
            uses_features = self.scorer._features is not None  # prepared by a metric that reads features
            new = ((self.scorer.extractor, self.scorer.prepared.weights_sha256) if uses_features else (None, None))
            # Evaluated before (eval.json): every point of the curve up to the checkpoint must be there.
            every = config.eval_every
            previous = resumable_rows(self.path, keep_until, range(every, keep_until + 1, every) if stored else None)
            if (stored and old != new) or previous[0] != header:
                raise GanzooError(f"{out} was evaluated during training with extractor '{old[0]}' (weights "
                                  f"{str(old[1])[:12]}) and columns {previous[0].strip()}; resume with the same "
                                  "--eval-extractor, weights and metrics, or pass --overwrite")
            lines += previous[1:]
        atomic_write(self.path, lambda f: f.write("".join(lines)), mode="w")

    def __call__(self, generator: torch.nn.Module, step: int) -> float:
        """Score the generator now; returns the seconds spent. generate() restores the generator's mode."""
        from .sampling import generate

        started = time.perf_counter()
        samples = generate(generator, self.scorer.samples_needed(self.n), self.latent_dim, EVAL_SEED,
                           labels=self.labels)
        result = self.scorer.score(samples, EVAL_SEED, source=f"the generator during training, latent seed "
                                                              f"{EVAL_SEED}", n_fake=self.n, labels=self.labels)
        values = [step] + [result.metrics[c] for c in self.columns[1:]]
        self.last = dict(zip(self.columns[1:], values[1:]))  # for TensorBoard
        with open(self.path, "a") as f:
            f.write(",".join(str(v) if isinstance(v, int) else f"{v:.8g}" for v in values) + "\n")
            f.flush()
            os.fsync(f.fileno())  # on disk before the checkpoint that follows: resume checks every point
        per_eval = {"eval_seconds", "evaluated_at"}
        write_json(self.protocol_path, {k: v for k, v in result.protocol.items() if k not in per_eval})
        return time.perf_counter() - started

    def summary(self) -> dict[str, Any]:
        """For run.json: the curve's best and final value of the metric it is ranked by (FID: best_fid, ...),
        their steps, and what they were computed with."""
        import pandas as pd

        curve = pd.read_csv(self.path)
        metric = self.rank_by
        if curve.empty or metric is None or metric not in curve:
            return {}
        if curve[metric].isna().all():  # e.g. reverse KL while no generated point is near a mode yet
            return {"curve_metric": metric, "eval_samples": self.n}
        better = next(c.better for spec in self.scorer.specs.values() for c in spec.columns if c.name == metric)
        best = curve.loc[curve[metric].idxmin() if better == "lower" else curve[metric].idxmax()]
        stats = {"curve_metric": metric, "best_value": float(best[metric]), "best_step": int(best["step"]),
                 "final_value": float(curve[metric].iloc[-1]), "final_step": int(curve["step"].iloc[-1]),
                 "eval_extractor": self.scorer.extractor if "fid" in curve else None, "eval_samples": self.n}
        if metric == "fid":  # the names the first releases used
            stats.update(best_fid=stats["best_value"], best_fid_step=stats["best_step"],
                         final_fid=stats["final_value"], final_fid_step=stats["final_step"])
        return stats


# ---------------------------------------------------------------------------------------------------------
# helpers


def _check_count(n: Any, what: str) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise GanzooError(f"{what} must be an integer of at least 2 (FID needs a covariance, KID pairs), got {n!r}")


def _pick(images: torch.Tensor, n: Optional[int], seed: int, what: str, where: str) -> tuple[torch.Tensor, str]:
    """All images, or a subset of n drawn without replacement from `seed` (kept in dataset order)."""
    total = len(images)
    if n is None or n == total:
        return images, f"all {total}"
    _check_count(n, what)
    if n > total:
        raise GanzooError(f"{what}={n} is more than the {total} images of {where}")
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return images[idx], f"random {n} of {total} (seed {seed})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
