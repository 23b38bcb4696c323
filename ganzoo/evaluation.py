"""Evaluation: IS, FID and KID through torch-fidelity, each score carrying the protocol it was computed under.

    evaluate(run)                    a trained run's generated images against its dataset's reference split
    evaluate_images(fake, dataset)   any uint8 N x C x H x W images against the reference split
    real_reference(dataset)          real training images against the reference split: what "perfect" scores

Each evaluation is one ``torch_fidelity.calculate_metrics(isc=True, fid=True, kid=True)`` call, so features are
extracted once; images go in as uint8 B x 3 x H x W (grayscale tiled to 3 channels). The feature extractor is
a plugin (hook ``ganzoo_feature_extractors``): ``inception-v3-compat`` gives the standard numbers (its weights
downloaded once into torch's hub cache, or given by path); ``classifier``, the default for labelled datasets,
works offline and gives "classifier IS/FID/KID", which rank models on one dataset but are not comparable with
Inception numbers. Scores from different protocols are not comparable either, so every EvalResult records
extractor and weights hash, sample counts, reference split, image handling, IS splits, KID subsets (capped at the
sample count), seed and versions.
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
from dataclasses import dataclass, field
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
from .specs import LOGITS_SINK, DatasetSpec, ExtractorRequest, PreparedExtractor

METRICS = ("is_mean", "is_std", "fid", "kid_mean", "kid_std")
COVERAGE = ("classes_covered", "class_kl")  # only when the extractor is a classifier of the dataset's classes
COVERAGE_SHARE = 0.05  # a class counts as covered when it holds at least this share of the generated samples
DEFAULT_N_FAKE = 5000
IS_SPLITS = 10  # torch-fidelity's defaults (and the TensorFlow reference implementations')
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_KERNEL = "polynomial, degree 3, gamma 1/d, coef0 1"
PRC_NEIGHBORHOOD = 3  # k of the k-NN balls (Kynkaanniemi et al. 2019 and torch-fidelity's default)
_FROM_FIDELITY = {"inception_score_mean": "is_mean", "inception_score_std": "is_std",
                  "frechet_inception_distance": "fid", "kernel_inception_distance_mean": "kid_mean",
                  "kernel_inception_distance_std": "kid_std", "precision": "precision", "recall": "recall"}


@dataclass
class EvalResult:
    """Scores (`metrics`, columns is_mean, is_std, fid, kid_mean, kid_std [, classes_covered, class_kl]) and
    the `protocol` they were computed under (flat: names to strings and numbers)."""

    metrics: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """One flat dict, ready to be a pandas row: the metrics, then ``protocol.<field>`` for every field."""
        return {**self.metrics, **{f"protocol.{k}": v for k, v in self.protocol.items()}}

    def summary(self) -> str:
        """Human-readable scores and protocol (what `ganzoo eval` prints)."""
        m, p = self.metrics, self.protocol
        kind = "classifier " if p.get("extractor_kind") == "classifier" else ""
        lines = [p.get("scores_are", ""),
                 f"  {kind}IS   {m['is_mean']:.4f} +- {m['is_std']:.4f}",
                 f"  {kind}FID  {m['fid']:.4f}",
                 f"  {kind}KID  {m['kid_mean']:.6f} +- {m['kid_std']:.6f}",
                 f"  precision {m.get('precision', math.nan):.4f}  recall {m.get('recall', math.nan):.4f}"]
        if "classes_covered" in m:
            lines.append(f"  classes covered {m['classes_covered']}/{p.get('num_classes')} "
                         f"(>= {COVERAGE_SHARE:.0%} of samples), class KL from uniform {m['class_kl']:.4f} nats")
        lines.append("protocol:")
        width = max(map(len, p), default=0)
        lines += [f"  {k:<{width}}  {v}" for k, v in p.items()]
        return "\n".join(lines)


def default_extractor(dataset: DatasetSpec) -> str:
    """The offline classifier for labelled datasets, else the standard Inception (which needs its weights)."""
    return "classifier" if dataset.num_classes else "inception-v3-compat"


def class_coverage(logits: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Mode coverage from predicted classes: classes holding >= 5% of samples, KL(histogram || uniform) in nats."""
    counts = torch.bincount(logits.argmax(1), minlength=num_classes)[:num_classes].double()
    share = counts / counts.sum()
    present = share[share > 0]
    return {"classes_covered": int((share >= COVERAGE_SHARE).sum()),
            "class_kl": float((present * (present * num_classes).log()).sum())}


class _Images(torch.utils.data.Dataset):
    """uint8 N x 3 x H x W in memory, one image per item, as torch-fidelity's DataLoader wants."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


class Scorer:
    """What stays fixed between evaluations against one dataset: the prepared extractor and the real images.

    evaluate_images builds one per call; training builds one and scores the generator at every eval point.
    """

    def __init__(self, dataset: str, extractor: Optional[str] = None, n_real: Optional[int] = None, seed: int = 0,
                 device: str = "auto", inception_weights: Optional[str | Path] = None,
                 dataset_options: Optional[dict] = None, data_root: Optional[str] = None, download: bool = False,
                 progress: bool = True, cache: bool = True, reference: Optional[tuple[torch.Tensor, str]] = None):
        self.device = resolve_device(device)
        self.options = normalize_dataset_options(dataset_options)
        self.dataset = registry.dataset(dataset, self.options)
        self.extractor = extractor or default_extractor(self.dataset)
        entry = registry.get("extractor", self.extractor)
        self.extractor_origin = f"{entry.plugin} ({entry.origin})"

        def load(split: str):
            return load_split(dataset, split, data_root, download, self.options)

        request = ExtractorRequest(self.dataset, load, dict(self.options),
                                   str(inception_weights) if inception_weights else None, str(self.device), progress)
        with torch.random.fork_rng(devices=[]):  # preparing may train a classifier: leave the caller's RNG alone
            self.prepared: PreparedExtractor = entry.spec.prepare(request)
        if not isinstance(self.prepared, PreparedExtractor):
            raise GanzooError(f"extractor '{self.extractor}' ({self.extractor_origin}) returned "
                              f"{type(self.prepared).__name__} from prepare, expected PreparedExtractor")

        # The real reference: the dataset's reference split (or what real_reference passes), maybe a seeded subset.
        if reference is None:
            split = self.dataset.reference_split
            data = load(split)
            images, subset = _pick(data.images, n_real, seed, "n_real", f"{dataset} '{split}'")
            self.reference_split = split
            self.real_subset = subset
            identity = [dataset, self.options, split, data.info, subset]
        else:
            images, self.reference_split = reference
            images, self.real_subset = _pick(images, n_real, seed, "n_real", f"{dataset} '{self.reference_split}'")
            identity = [dataset, self.options, self.reference_split,
                        hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()]
        self.real = self._as_rgb(images, f"the real '{self.reference_split}' images")
        # FID fits a covariance to each side's features: with no more images than feature dimensions it is
        # singular and the score says little. Refusing would block quick looks at tiny data; the protocol says so.
        self.reference_warning = ""
        if len(self.real) <= self.prepared.feature_dim:
            self.reference_warning = (
                f"only {len(self.real)} reference images for {self.prepared.feature_dim}-dimensional features: "
                f"FID's covariance is singular and the score is not meaningful (use more than "
                f"{self.prepared.feature_dim})")
            print(f"ganzoo: warning: {self.reference_warning}", file=sys.stderr)
        # torch-fidelity caches the real side's features and FID statistics under this name. The weights hash is
        # part of it, so two weights files (or two classifiers) never share an entry.
        identity += [self.extractor, self.prepared.fidelity_name, self.prepared.weights_sha256,
                     self.prepared.feature_layers]
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]
        readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.dataset.name}-{self.reference_split}")
        self.real_cache_name = f"ganzoo-{readable}-{digest}" if cache else None

    # -----------------------------------------------------------------------------------------------------

    def _as_rgb(self, images: Any, what: str) -> torch.Tensor:
        """Check uint8 N x C x H x W against the dataset's shape; tile grayscale to the 3 channels torch-fidelity wants."""
        shape = self.dataset.shape
        expected = (shape.channels, shape.size, shape.size)
        if not isinstance(images, torch.Tensor):
            try:
                images = torch.as_tensor(images)
            except (TypeError, ValueError, RuntimeError):
                raise GanzooError(f"{what} must be a uint8 tensor N x {' x '.join(map(str, expected))}, "
                                  f"got {type(images).__name__}") from None
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise GanzooError(f"{what} must be uint8 N x {' x '.join(map(str, expected))}, got {images.dtype} "
                              f"{tuple(images.shape)}")
        if tuple(images.shape[1:]) != expected:
            raise GanzooError(f"{what} are {' x '.join(map(str, images.shape[1:]))} (C x H x W), but dataset "
                              f"'{self.dataset.name}' has {' x '.join(map(str, expected))}: "
                              "sizes and channels must match")
        if shape.channels not in (1, 3):
            raise GanzooError(f"dataset '{self.dataset.name}' has {shape.channels} channels; "
                              "evaluation handles 1 (grayscale, tiled to 3) or 3")
        images = images.cpu()
        return images.expand(-1, 3, -1, -1) if shape.channels == 1 else images

    def score(self, fake: Any, seed: int = 0, source: str = "images", context: Optional[dict] = None) -> EvalResult:
        """IS/FID/KID of `fake` (uint8 N x C x H x W) against the real reference, with the full protocol."""
        fake = self._as_rgb(fake, "the generated images")
        n_fake, n_real = len(fake), len(self.real)
        _check_count(n_fake, "generated samples")
        p = self.prepared
        is_splits = min(IS_SPLITS, n_fake)
        kid_subset_size = min(KID_SUBSET_SIZE, n_fake, n_real)  # torch-fidelity refuses more than either side has
        sink: list[torch.Tensor] = []
        # Precision and recall (Kynkaanniemi et al. 2019) on the FID features, in the same pass. torch-fidelity
        # >= 0.4 takes the generated set as input1 (earlier versions swapped the roles); k-NN needs k + 1 samples.
        prc = min(n_fake, n_real) > PRC_NEIGHBORHOOD
        kwargs = dict(
            input1=_Images(fake), input2=_Images(self.real), isc=True, fid=True, kid=True, prc=prc,
            feature_layer_prc=p.feature_layers["fid"], prc_neighborhood=PRC_NEIGHBORHOOD,
            feature_extractor=p.fidelity_name, feature_extractor_weights_path=p.weights_path,
            feature_layer_isc=p.feature_layers["isc"], feature_layer_fid=p.feature_layers["fid"],
            feature_layer_kid=p.feature_layers["kid"],
            isc_splits=is_splits, kid_subsets=KID_SUBSETS, kid_subset_size=kid_subset_size, rng_seed=seed,
            batch_size=p.batch_size, cuda=self.device.type == "cuda",
            cache=self.real_cache_name is not None,
            input2_cache_name=self.real_cache_name,
            save_cpu_ram=True,  # no DataLoader worker processes: the images are already in memory
            verbose=False,
        )
        if p.num_classes:
            kwargs[LOGITS_SINK] = sink
        import torch_fidelity

        started = time.perf_counter()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        on_device = torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()
        with torch.random.fork_rng(devices=devices), on_device:  # mid-training, the training RNG must not move
            try:
                with caches.fidelity_cache(self.real_cache_name) as private_root:  # never a shared folder
                    raw = torch_fidelity.calculate_metrics(**kwargs, cache_root=private_root)
            except ValueError as exc:  # torch-fidelity's own input checks (vassert)
                raise GanzooError(f"torch-fidelity refused the evaluation: {_first_line(exc)}") from None
            except (RuntimeError, OSError, EOFError) as exc:
                raise GanzooError(f"extractor '{self.extractor}' failed: {_first_line(exc)}") from None
        seconds = time.perf_counter() - started
        metrics = {ours: float(raw[theirs]) if theirs in raw else math.nan for theirs, ours in _FROM_FIDELITY.items()}
        if p.num_classes:
            # The fakes are input1, so their logits come first; the real side's follow unless they were cached.
            logits = torch.cat(sink) if sink else torch.empty(0, p.num_classes)
            if len(logits) not in (n_fake, n_fake + n_real):
                raise GanzooError(f"extractor '{self.extractor}' reported {len(logits)} logits for {n_fake} generated "
                                  f"and {n_real} real images; cannot compute class coverage")
            metrics.update(class_coverage(logits[:n_fake], p.num_classes))

        import torch_fidelity.version

        protocol: dict[str, Any] = {
            "scores_are": p.scores_are,
            "extractor": self.extractor,
            "extractor_kind": "classifier" if p.num_classes else "feature network",
            "extractor_plugin": self.extractor_origin,
            "extractor_weights_sha256": p.weights_sha256,
            "feature_layers": ", ".join(f"{m}={layer}" for m, layer in p.feature_layers.items()),
            "feature_dim": p.feature_dim,
        }
        protocol.update({k: v for k, v in p.info.items()})
        protocol.update({
            "num_classes": p.num_classes,
            "dataset": self.dataset.name,
            "dataset_options": json.dumps(self.options, sort_keys=True) if self.options else "",
            "generated_from": source,
            **(context or {}),
            "n_fake": n_fake,
            "n_real": n_real,
            "reference_split": self.reference_split,
            "real_subset": self.real_subset,
            **({"reference_warning": self.reference_warning} if self.reference_warning else {}),
            "image_size": f"{self.dataset.shape.size}x{self.dataset.shape.size}",
            "resize": p.resize,
            "channels": ("grayscale tiled to 3 channels (uint8 Bx3xHxW)" if self.dataset.shape.channels == 1
                         else "RGB as is (uint8 Bx3xHxW)"),
            "is_splits": is_splits,
            "kid_subsets": KID_SUBSETS,
            "kid_subset_size": kid_subset_size,
            "kid_subset_size_capped": kid_subset_size < KID_SUBSET_SIZE,
            "kid_kernel": KID_KERNEL,
            "prc": (f"precision/recall of generated vs real (Kynkaanniemi et al. 2019), {PRC_NEIGHBORHOOD}-NN on "
                    f"the FID features" if prc else "not computed: too few samples for the k-NN balls"),
            "seed": seed,
            "torch_fidelity_version": torch_fidelity.version.__version__,
            "torch_version": str(torch.__version__),
            "ganzoo_version": __version__,
            "device": str(self.device),
            "eval_seconds": round(seconds, 3),
            "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        return EvalResult(metrics, protocol)


# ---------------------------------------------------------------------------------------------------------
# the public API


def evaluate_images(fake_uint8: Any, dataset: str, extractor: Optional[str] = None, *, n_real: Optional[int] = None,
                    seed: int = 0, device: str = "auto", inception_weights: Optional[str | Path] = None,
                    dataset_options: Optional[dict] = None, data_root: Optional[str] = None,
                    progress: bool = True) -> EvalResult:
    """Score images (uint8 N x C x H x W, CPU) against `dataset`'s reference split (all of it, or a seeded
    subset of n_real). `extractor` None means the dataset's default (see default_extractor)."""
    scorer = Scorer(dataset, extractor, n_real, seed, device, inception_weights, dataset_options, data_root,
                    progress=progress)
    return scorer.score(fake_uint8, seed)


def evaluate(run, extractor: Optional[str] = None, n_fake: int = DEFAULT_N_FAKE, n_real: Optional[int] = None,
             seed: int = 0, device: str = "auto", inception_weights: Optional[str | Path] = None, *,
             progress: bool = True) -> EvalResult:
    """Score a trained run (a Run or its folder): n_fake images from latent seed `seed` against the reference
    split of the dataset it was trained on. The protocol adds the run's steps and training wall time."""
    from .sampling import generate, load_generator

    _check_count(n_fake, "n_fake")
    generator, run = load_generator(run, device)
    config = run.config
    scorer = Scorer(config.dataset, extractor, n_real, seed, device, inception_weights, config.dataset_options,
                    config.data_root, progress=progress)
    images = generate(generator, n_fake, config.latent_dim, seed)
    context = {"run": str(run.path), "run_key": config.key(), "variant": config.variant, "arch": config.arch,
               "steps_trained": run.step, "run_status": run.status,
               "train_wall_time_s": run.stats.get("wall_time_s")}
    return scorer.score(images, seed, source=f"generator of run {run.path} at step {run.step}, latent seed {seed}",
                        context=context)


def real_reference(dataset: str, extractor: Optional[str] = None, n: Optional[int] = None, seed: int = 0, *,
                   n_real: Optional[int] = None, device: str = "auto", inception_weights: Optional[str | Path] = None,
                   dataset_options: Optional[dict] = None, data_root: Optional[str] = None,
                   progress: bool = True) -> EvalResult:
    """Real data scored as if generated: n images of the training split (default: as many as evaluate
    generates, or the whole split if smaller) against the reference split, through the same pipeline.

    This is the row that shows what a perfect generator of the training data would score under the protocol.
    A dataset whose training and reference splits are the same is cut into two disjoint seeded halves.
    Note: the reference classifier was trained on the training split, so its IS here is a little optimistic.
    """
    options = normalize_dataset_options(dataset_options)
    spec = registry.dataset(dataset, options)
    train = load_split(dataset, spec.train_split, data_root, False, options).images
    reference = None
    if spec.train_split == spec.reference_split:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        half = len(train) // 2
        reference = (train[order[half:].sort().values], f"{spec.reference_split} (second half, seed {seed})")
        train = train[order[:half].sort().values]
    images, subset = _pick(train, min(DEFAULT_N_FAKE, len(train)) if n is None else n, seed, "n",
                           f"{dataset} '{spec.train_split}'")
    scorer = Scorer(dataset, extractor, n_real, seed, device, inception_weights, options, data_root,
                    progress=progress, reference=reference)
    return scorer.score(images, seed, source=f"real images: {dataset} '{spec.train_split}', {subset}",
                        context={"real_vs_real": True})


# ---------------------------------------------------------------------------------------------------------
# evaluation during training (TrainConfig.eval_every)

EVAL_SEED = 0  # latent and torch-fidelity seed of in-training scores: every point of a curve sees the same noise


class TrainingEvaluator:
    """Scores the generator every eval_every steps and at the last step; one eval.csv row per evaluation.

    Built before the first step, so that a missing weights file or an unlabelled dataset fails before any
    training and the extractor is prepared (a classifier trained) once. On resume, rows past the checkpoint's
    step are dropped, as in log.csv; a resume with another extractor is refused rather than mixed into one curve.
    """

    def __init__(self, config, out: Path, device: Any, keep_until: int):
        from .runs import EVAL_FILE, EVAL_PROTOCOL_FILE, resumable_rows

        self.scorer = Scorer(config.dataset, config.eval_extractor, None, EVAL_SEED, str(device),
                             config.inception_weights, config.dataset_options, config.data_root, config.download)
        self.n, self.latent_dim = config.eval_samples, config.latent_dim
        self.path, self.protocol_path = out / EVAL_FILE, out / EVAL_PROTOCOL_FILE
        self.columns = ("step",) + METRICS + (COVERAGE if self.scorer.prepared.num_classes else ())
        header = ",".join(self.columns) + "\n"
        lines = [header]
        if keep_until > 0 and (self.path.is_file() or self.protocol_path.is_file()):
            stored = read_json(self.protocol_path, "eval protocol") if self.protocol_path.is_file() else {}
            old = (stored.get("extractor"), stored.get("extractor_weights_sha256"))
            new = (self.scorer.extractor, self.scorer.prepared.weights_sha256)
            # Evaluated before (eval.json): every point of the curve up to the checkpoint must be there.
            every = config.eval_every
            previous = resumable_rows(self.path, keep_until, range(every, keep_until + 1, every) if stored else None)
            if (stored and old != new) or previous[0] != header:
                raise GanzooError(f"{out} was evaluated during training with extractor '{old[0]}' (weights "
                                  f"{str(old[1])[:12]}); resume with the same --eval-extractor and weights, or "
                                  "pass --overwrite")
            lines += previous[1:]
        atomic_write(self.path, lambda f: f.write("".join(lines)), mode="w")

    def __call__(self, generator: torch.nn.Module, step: int) -> float:
        """Score the generator now; returns the seconds spent. generate() restores the generator's mode."""
        from .sampling import generate

        started = time.perf_counter()
        images = generate(generator, self.n, self.latent_dim, EVAL_SEED)
        result = self.scorer.score(images, EVAL_SEED, source=f"the generator during training, latent seed {EVAL_SEED}")
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
        """For run.json: the curve's best FID and its step, the final FID, and what they were computed with."""
        import pandas as pd

        curve = pd.read_csv(self.path)
        if curve.empty or curve["fid"].isna().all():
            return {}
        best = curve.loc[curve["fid"].idxmin()]
        return {"best_fid": float(best["fid"]), "best_fid_step": int(best["step"]),
                "final_fid": float(curve["fid"].iloc[-1]), "final_fid_step": int(curve["step"].iloc[-1]),
                "eval_extractor": self.scorer.extractor, "eval_samples": self.n}


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
