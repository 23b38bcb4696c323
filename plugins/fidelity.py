"""fidelity: IS, FID, KID, precision and recall from one torch-fidelity pass (features extracted once).

Images go to torch-fidelity as uint8 B x 3 x H x W (grayscale tiled to 3 channels). The feature extractor is the
evaluation's (a plugin of its own: the offline `classifier` or the standard `inception-v3-compat`), and the real
side's features are cached under a name that includes its weights hash. torch-fidelity matches the TensorFlow
reference implementations (FID and KID to relative error 1e-6, IS to 1e-3); its defaults are kept: 10 IS splits,
KID on 100 subsets of 1000 (capped at the sample counts), a cubic polynomial kernel. Precision and recall
(Kynkaanniemi et al. 2019) use the FID features and 3-NN balls; generated images are torch-fidelity's input1, as
versions >= 0.4 expect.
"""
from __future__ import annotations

import contextlib
import math
import sys

import torch

from ganzoo import caches
from ganzoo.errors import GanzooError
from ganzoo.evaluation import _Images, as_rgb
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import MetricColumn, MetricRequest, MetricResult, MetricSamples, MetricSpec

IS_SPLITS = 10  # torch-fidelity's defaults (and the TensorFlow reference implementations')
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_KERNEL = "polynomial, degree 3, gamma 1/d, coef0 1"
PRC_NEIGHBORHOOD = 3  # k of the k-NN balls (Kynkaanniemi et al. 2019 and torch-fidelity's default)
FROM_FIDELITY = {"inception_score_mean": "is_mean", "inception_score_std": "is_std",
                 "frechet_inception_distance": "fid", "kernel_inception_distance_mean": "kid_mean",
                 "kernel_inception_distance_std": "kid_std", "precision": "precision", "recall": "recall"}
COLUMNS = (
    MetricColumn("fid", "FID", "lower", ".2f"),
    MetricColumn("is_mean", "IS", "higher", ".2f", board="is"),
    MetricColumn("is_std", "IS sd (splits)", None, ".3f", shown=False),
    # KID's scale depends on the extractor's features (about 1e-2 for Inception, hundreds for the classifier)
    MetricColumn("kid_mean", "KID", "lower", ".4g", board="kid"),
    MetricColumn("kid_std", "KID sd (subsets)", None, ".4g", shown=False),
    MetricColumn("precision", "precision", "higher", ".3f"),
    MetricColumn("recall", "recall", "higher", ".3f"),
)
COMPARABLE = ("extractor", "extractor_weights_sha256", "image_size", "resize", "channels", "is_splits", "kid_subsets",
              "kid_subset_size")


def prepare(request: MetricRequest):
    features = request.features()
    p = features.prepared
    reference = request.reference()
    real = as_rgb(reference.samples)
    dataset = request.dataset
    # FID fits a covariance to each side's features: with no more images than feature dimensions it is singular
    # and the score says little. Refusing would block quick looks at tiny data; the protocol says so.
    warning = ""
    if len(real) <= p.feature_dim:
        warning = (f"only {len(real)} reference images for {p.feature_dim}-dimensional features: FID's covariance is "
                   f"singular and the score is not meaningful (use more than {p.feature_dim})")
        print(f"ganzoo: warning: {warning}", file=sys.stderr)
    cache_name = features.cache_name(reference)
    device = features.device

    def score(given: MetricSamples) -> MetricResult:
        import torch_fidelity
        import torch_fidelity.version

        fake = as_rgb(given.samples)
        n_fake, n_real = len(fake), len(real)
        is_splits = min(IS_SPLITS, n_fake)
        kid_subset_size = min(KID_SUBSET_SIZE, n_fake, n_real)  # torch-fidelity refuses more than either side has
        prc = min(n_fake, n_real) > PRC_NEIGHBORHOOD  # k-NN needs k + 1 samples
        kwargs = dict(
            input1=_Images(fake), input2=_Images(real), isc=True, fid=True, kid=True, prc=prc,
            feature_layer_prc=p.feature_layers["fid"], prc_neighborhood=PRC_NEIGHBORHOOD,
            feature_extractor=p.fidelity_name, feature_extractor_weights_path=p.weights_path,
            feature_layer_isc=p.feature_layers["isc"], feature_layer_fid=p.feature_layers["fid"],
            feature_layer_kid=p.feature_layers["kid"],
            isc_splits=is_splits, kid_subsets=KID_SUBSETS, kid_subset_size=kid_subset_size, rng_seed=given.seed,
            batch_size=p.batch_size, cuda=device.type == "cuda", cache=cache_name is not None,
            input2_cache_name=cache_name,
            save_cpu_ram=True,  # no DataLoader worker processes: the images are already in memory
            verbose=False,
        )
        on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
        with on_device:
            try:
                with caches.fidelity_cache(cache_name) as private_root:  # never a shared folder
                    raw = torch_fidelity.calculate_metrics(**kwargs, cache_root=private_root)
            except ValueError as exc:  # torch-fidelity's own input checks (vassert)
                raise GanzooError(f"torch-fidelity refused the evaluation: {_first_line(exc)}") from None
            except (RuntimeError, OSError, EOFError) as exc:
                raise GanzooError(f"extractor '{features.name}' failed: {_first_line(exc)}") from None
        values = {ours: float(raw[theirs]) if theirs in raw else math.nan for theirs, ours in FROM_FIDELITY.items()}
        shape = dataset.shape
        protocol = {
            **features.protocol(),
            "num_classes": p.num_classes,
            "n_fake": n_fake, "n_real": n_real, "reference_split": reference.split, "real_subset": reference.subset,
            **({"reference_warning": warning} if warning else {}),
            "image_size": f"{shape.size}x{shape.size}",
            "resize": p.resize,
            "channels": ("grayscale tiled to 3 channels (uint8 Bx3xHxW)" if shape.channels == 1
                         else "RGB as is (uint8 Bx3xHxW)"),
            "is_splits": is_splits,
            "kid_subsets": KID_SUBSETS,
            "kid_subset_size": kid_subset_size,
            "kid_subset_size_capped": kid_subset_size < KID_SUBSET_SIZE,
            "kid_kernel": KID_KERNEL,
            "prc": (f"precision/recall of generated vs real (Kynkaanniemi et al. 2019), {PRC_NEIGHBORHOOD}-NN on "
                    f"the FID features" if prc else "not computed: too few samples for the k-NN balls"),
            "torch_fidelity_version": torch_fidelity.version.__version__,
        }
        return MetricResult(values, protocol)

    return score


def _applies(dataset) -> str | None:
    if dataset.shape.kind != "image":
        return f"IS, FID and KID read images through a feature network, and '{dataset.name}' has " \
               f"{dataset.shape.describe()}"
    if dataset.shape.channels not in (1, 3):
        return f"feature extractors take 1 or 3 channels, and '{dataset.name}' has {dataset.shape.channels}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@hookimpl
def ganzoo_metrics():
    return [MetricSpec(
        name="fidelity",
        description="IS, FID, KID and precision/recall from one torch-fidelity pass over the extractor's features",
        columns=COLUMNS, prepare=prepare, applies=_applies, needs=("samples", "reference", "features"),
        comparable=COMPARABLE,
        paper="Salimans et al. 2016 (IS); Heusel et al. 2017 (FID); Binkowski et al. 2018 (KID); Kynkaanniemi et "
              "al. 2019 (precision/recall); through torch-fidelity (Obukhov et al.)",
    )]
