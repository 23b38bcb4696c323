"""class-coverage: which of a labelled dataset's classes the generated images fall into, by its reference
classifier: classes holding at least 5% of the samples, and the KL divergence of the predicted class histogram
from uniform (in nats; 0 when every class is equally frequent, log K when all samples are one class)."""
from __future__ import annotations

import torch

from ganzoo.hookspecs import hookimpl
from ganzoo.specs import MetricColumn, MetricRequest, MetricResult, MetricSamples, MetricSpec

SHARE = 0.05  # a class counts as covered when it holds at least this share of the generated samples


def class_coverage(logits: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Mode coverage from predicted classes: classes holding >= 5% of samples, KL(histogram || uniform) in nats."""
    counts = torch.bincount(logits.argmax(1), minlength=num_classes)[:num_classes].double()
    share = counts / counts.sum()
    present = share[share > 0]
    return {"classes_covered": int((share >= SHARE).sum()),
            "class_kl": float((present * (present * num_classes).log()).sum())}


def prepare(request: MetricRequest):
    classifier = request.classifier()

    def score(given: MetricSamples) -> MetricResult:
        values = class_coverage(classifier.logits(given.samples), classifier.num_classes)
        return MetricResult(values, {
            "coverage": f"classes holding >= {SHARE:.0%} of samples and KL(class histogram || uniform), by the "
                        f"'{classifier.dataset}' reference classifier",
            "coverage_classifier_sha256": classifier.weights_sha256, "coverage_classes": classifier.num_classes,
            **({"coverage_classifier_accuracy": classifier.info["classifier_accuracy"]}
               if "classifier_accuracy" in classifier.info else {})})

    return score


def _applies(dataset):
    if dataset.shape.kind != "image":
        return f"the reference classifier reads images, and '{dataset.name}' has {dataset.shape.describe()}"
    return None


@hookimpl
def ganzoo_metrics():
    return [MetricSpec(
        name="class-coverage",
        description="classes the reference classifier finds in the samples (>= 5% each) and KL of their histogram "
                    "from uniform",
        columns=(MetricColumn("classes_covered", "classes covered (>=5%)", "higher", ".1f", board="classes"),
                 MetricColumn("class_kl", "class KL", "lower", ".3f")),
        prepare=prepare, applies=_applies, needs=("samples", "classifier"),
        comparable=("coverage_classifier_sha256",),
        paper="mode coverage by a pretrained classifier, as in Che et al. 2017 and Srivastava et al. 2017",
    )]
