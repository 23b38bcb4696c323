"""Mode-collapse metrics as the papers define them, for the datasets built for them.

mixture-modes (2-D mixtures: ring, grid), VEEGAN's definitions as the PacGAN code computes them: 2,500 generated
points; each goes to its nearest mode by the standardised distance sqrt(sum d^2 / std^2); a point is "high
quality" when that distance is below 3 (std); a mode is captured when at least one high-quality point is nearest
to it; % high quality = high-quality points / all points; reverse KL = KL(histogram of the high-quality points
over the modes || uniform), in nats (undefined, NaN, when no point is of high quality).

stacked-modes (Stacked MNIST): each channel of a generated image is classified by the source dataset's reference
classifier (MNIST's); the triple of digits is the image's mode. Modes captured = triples with at least one sample;
KL = KL(mode histogram || uniform over the 1,000 triples), in nats. 26,000 samples (setting "V", VEEGAN and
PacGAN Table 2) by default; 25,600 for setting "U" (Unrolled GAN, PacGAN Table 3): option samples.
"""
from __future__ import annotations

import math

import torch

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import MetricColumn, MetricRequest, MetricResult, MetricSamples, MetricSpec, Option

MIXTURE_SAMPLES = 2500
STACKED_SAMPLES = 26_000


def mixture_scores(points: torch.Tensor, means: torch.Tensor, std: float, threshold: float = 3.0) -> dict:
    """modes captured, % high quality and reverse KL of `points` (N x 2) against a mixture with `means` (K x 2)
    and the same isotropic `std` for every mode."""
    distance = torch.cdist(points.double(), means.double()) / std  # standardised: sqrt(sum d^2 / std^2)
    nearest, mode = distance.min(dim=1)
    good = nearest < threshold
    counts = torch.bincount(mode[good], minlength=len(means)).double()
    total = counts.sum()
    if total > 0:
        share = counts / total
        present = share[share > 0]
        reverse_kl = float((present * (present * len(means)).log()).sum())
    else:
        reverse_kl = math.nan
    return {"modes": int((counts > 0).sum()), "high_quality": 100.0 * float(good.double().mean()),
            "reverse_kl": reverse_kl}


def prepare_mixture(samples: int, threshold: float):
    def prepare(request: MetricRequest):
        mixture = request.dataset.metadata["mixture"]
        means, std = torch.tensor(mixture["means"], dtype=torch.float64), float(mixture["std"])

        def score(given: MetricSamples) -> MetricResult:
            return MetricResult(mixture_scores(given.samples, means, std, threshold), {
                "mixture_modes.definition": f"nearest mode by standardised distance; high quality below "
                                            f"{threshold:g} std; a mode is captured by one high-quality point; "
                                            "reverse KL of the high-quality points' histogram from uniform (nats)",
                "mixture_modes.threshold_std": threshold, "mixture_modes.modes": len(means),
                "mixture_modes.std": std})

        return score

    return prepare


def stacked_modes(digits: torch.Tensor, classes: int = 10) -> dict:
    """modes captured and KL(histogram || uniform over classes^3) of (N, 3) predicted digits."""
    mode = digits[:, 0] * classes * classes + digits[:, 1] * classes + digits[:, 2]
    counts = torch.bincount(mode, minlength=classes ** 3).double()
    share = counts / counts.sum()
    present = share[share > 0]
    return {"stacked_modes": int((counts > 0).sum()),
            "stacked_kl": float((present * (present * classes ** 3).log()).sum())}


def prepare_stacked(samples: int):
    def prepare(request: MetricRequest):
        source = request.dataset.metadata["stacked"]["source"]
        classifier = request.classifier(source)  # MNIST's reference classifier reads one channel at a time
        if classifier.num_classes != 10:
            raise GanzooError(f"stacked-modes needs a 10-class classifier of '{source}', got {classifier.num_classes}")

        def score(given: MetricSamples) -> MetricResult:
            images = given.samples
            digits = torch.stack([classifier.logits(images[:, k:k + 1].contiguous()).argmax(1)
                                  for k in range(images.shape[1])], dim=1)
            return MetricResult(stacked_modes(digits), {
                "stacked_modes.definition": "each channel classified by the source's reference classifier; a mode "
                                            "is a triple of digits; KL of the mode histogram from uniform over 1,000",
                "stacked_modes.classifier": source,
                "stacked_modes.classifier_sha256": classifier.weights_sha256,
                **({"stacked_modes.classifier_accuracy": classifier.info["classifier_accuracy"]}
                   if "classifier_accuracy" in classifier.info else {})})

        return score

    return prepare


def _mixture_applies(dataset):
    if "mixture" not in dataset.metadata:
        return f"it scores mixtures of Gaussians (ring, grid), and '{dataset.name}' is not one"
    return None


def _stacked_applies(dataset):
    stacked = dataset.metadata.get("stacked")
    if not stacked:
        return f"it scores Stacked MNIST, and '{dataset.name}' is not it"
    if dataset.shape.kind != "image" or dataset.shape.channels != stacked.get("channels", 3):
        return f"'{dataset.name}' does not have {stacked.get('channels', 3)} channels"
    return None


def mixture_metric(samples: int = MIXTURE_SAMPLES, threshold: float = 3.0) -> MetricSpec:
    if samples < 1 or not threshold > 0:
        raise GanzooError(f"metric 'mixture-modes' needs samples >= 1 and a positive threshold, got {samples}, "
                          f"{threshold}")
    return MetricSpec(
        name="mixture-modes",
        description=f"modes captured, % high-quality points (< {threshold:g} std from a mode) and reverse KL, on "
                    f"{samples:,} points (VEEGAN/PacGAN)",
        columns=(MetricColumn("modes", "modes", "higher", ".1f"),
                 MetricColumn("high_quality", "% high quality", "higher", ".1f"),
                 MetricColumn("reverse_kl", "reverse KL", "lower", ".3f")),
        rank_by="reverse_kl",  # it sees both missing modes and uneven ones
        prepare=prepare_mixture(samples, threshold), applies=_mixture_applies, samples=samples,
        comparable=("mixture_modes.threshold_std", "mixture_modes.samples", "mixture_modes.modes", "mixture_modes.std"),
        paper="Srivastava et al. 2017, VEEGAN (arXiv:1705.07761); Lin et al. 2018, PacGAN (arXiv:1712.04086)",
        options={"samples": Option(MIXTURE_SAMPLES, "generated points scored (2,500 as published)"),
                 "threshold": Option(3.0, "a point within this many std of its nearest mode is of high quality")},
        configure=lambda o: mixture_metric(o["samples"], o["threshold"]),
    )


def stacked_metric(samples: int = STACKED_SAMPLES) -> MetricSpec:
    if samples < 1:
        raise GanzooError(f"metric 'stacked-modes' needs samples >= 1, got {samples}")
    return MetricSpec(
        name="stacked-modes",
        description=f"Stacked MNIST modes captured (of 1,000) and KL to uniform, on {samples:,} samples, each channel "
                    "classified by MNIST's reference classifier",
        columns=(MetricColumn("stacked_modes", "modes (of 1000)", "higher", ".1f"),
                 MetricColumn("stacked_kl", "KL", "lower", ".2f")),
        rank_by="stacked_kl",
        prepare=prepare_stacked(samples), applies=_stacked_applies, samples=samples, needs=("samples", "classifier"),
        comparable=("stacked_modes.samples", "stacked_modes.classifier_sha256"),
        paper="Metz et al. 2017, Unrolled GANs (arXiv:1611.02163); Srivastava et al. 2017, VEEGAN; Lin et al. 2018, "
              "PacGAN",
        options={"samples": Option(STACKED_SAMPLES, "generated images scored: 26,000 (setting V) or 25,600 (U)")},
        configure=lambda o: stacked_metric(o["samples"]),
    )


@hookimpl
def ganzoo_metrics():
    return [mixture_metric(), stacked_metric()]
