"""Conditional metrics: do the samples of a class-conditional generator show the class they were asked for?

Each scores generated images together with the labels they were generated for (MetricSamples.labels); samples
without labels (an unconditional generator) get NaN, and the protocol says so. All use the dataset's held-out
reference split as the real side, never the training split.

  class-accuracy  the dataset's reference classifier on generated images against the class requested ("GAN-test",
                  Shmelkov et al. 2018); a perfect conditional sampler scores the classifier's own accuracy on real
                  data, a sampler that ignores the label about 1/K
  intra-fid       per-class FID (generated class k against the reference split's class k) on the evaluation's
                  feature extractor, averaged over classes, and the worst class (Miyato & Koyama 2018)
  cas             Classification Accuracy Score (Ravuri & Vinyals 2019): the reference classifier's network and
                  recipe trained only on the generated images and their requested labels, tested on the held-out
                  reference split, beside the same network trained on the real training split, tested there too
  class-prc       precision and recall (Kynkaenniemi et al. 2019, k = 3 nearest neighbours, torch-fidelity's
                  implementation) within each class, on the extractor's features: which classes collapse
"""
from __future__ import annotations

import json
import math

import torch

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import ImageData, MetricColumn, MetricRequest, MetricResult, MetricSamples, MetricSpec, Option

NO_LABELS = "none: the samples came without requested labels (an unconditional generator), so this is NaN"
MIN_PER_CLASS = 2  # FID needs a covariance, precision/recall a neighbour


def _applies(dataset):
    if dataset.shape.kind != "image":
        return f"it reads images, and '{dataset.name}' has {dataset.shape.describe()}"
    return None


def _nan(columns, name: str) -> MetricResult:
    return MetricResult({c.name: math.nan for c in columns}, {f"{name}.labels": NO_LABELS})


def _labelled_reference(request: MetricRequest):
    reference = request.reference()
    if reference.labels is None:
        raise GanzooError(f"the reference split '{reference.split}' has no labels, which conditional metrics need")
    return reference


def _checked_labels(given: MetricSamples, num_classes: int) -> torch.Tensor:
    labels = torch.as_tensor(given.labels).long().cpu()
    if labels.shape != (len(given.samples),):
        raise GanzooError(f"{len(labels)} labels for {len(given.samples)} samples")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise GanzooError(f"labels outside the dataset's classes 0..{num_classes - 1}")
    return labels


def _rounded(values) -> str:
    return json.dumps([None if v != v else round(float(v), 4) for v in values])


# ---- accuracy on the requested class ----

ACCURACY_COLUMNS = (MetricColumn("cond_accuracy", "accuracy on requested class", "higher", ".3f", board="cond_acc"),
                    MetricColumn("cond_accuracy_worst", "worst class accuracy", "higher", ".3f",
                                 board="cond_acc_worst"))


def accuracy_per_class(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """Share of the samples asked for class k that the classifier puts in class k (NaN for a class never asked)."""
    out = []
    for k in range(num_classes):
        asked = labels == k
        out.append(float((predicted[asked] == k).float().mean()) if asked.any() else math.nan)
    return out


def prepare_accuracy(request: MetricRequest):
    classifier = request.classifier()

    def score(given: MetricSamples) -> MetricResult:
        if given.labels is None:
            return _nan(ACCURACY_COLUMNS, "cond_accuracy")
        labels = _checked_labels(given, classifier.num_classes)
        predicted = classifier.logits(given.samples).argmax(1)
        per_class = accuracy_per_class(predicted, labels, classifier.num_classes)
        asked = [a for a in per_class if a == a]
        return MetricResult(
            {"cond_accuracy": float((predicted == labels).float().mean()), "cond_accuracy_worst": min(asked)},
            {"cond_accuracy.protocol": f"share of generated images the '{classifier.dataset}' reference classifier "
                                       "puts in the class they were generated for; worst: the lowest class",
             "cond_accuracy.per_class": _rounded(per_class),
             "cond_accuracy.classifier_sha256": classifier.weights_sha256,
             "cond_accuracy.classifier_real_accuracy": classifier.info.get("classifier_accuracy")})

    return score


# ---- intra-class FID ----

INTRA_COLUMNS = (MetricColumn("intra_fid", "intra-class FID (mean)", "lower", ".4g"),
                 MetricColumn("intra_fid_worst", "intra-class FID (worst class)", "lower", ".4g"))


def frechet(fake: torch.Tensor, real: torch.Tensor) -> float:
    """FID between two feature sets, as torch-fidelity computes it."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    return float(fid_statistics_to_metric(fid_features_to_statistics(fake.double()),
                                          fid_features_to_statistics(real.double()), False)["frechet_inception_distance"])


def prepare_intra_fid(request: MetricRequest):
    features = request.features()
    reference = _labelled_reference(request)
    real = features.features(reference.samples)
    num_classes = request.dataset.num_classes

    def score(given: MetricSamples) -> MetricResult:
        if given.labels is None:
            return _nan(INTRA_COLUMNS, "intra_fid")
        labels = _checked_labels(given, num_classes)
        fake = features.features(given.samples)
        per_class, counts = [], []
        for k in range(num_classes):
            f, r = fake[labels == k], real[reference.labels == k]
            counts.append([len(f), len(r)])
            if len(f) < MIN_PER_CLASS or len(r) < MIN_PER_CLASS:
                raise GanzooError(f"class {k} has {len(f)} generated and {len(r)} reference samples; intra-class FID "
                                  f"needs at least {MIN_PER_CLASS} of each (generate more samples)")
            per_class.append(frechet(f, r))
        return MetricResult(
            {"intra_fid": sum(per_class) / len(per_class), "intra_fid_worst": max(per_class)},
            {"intra_fid.protocol": f"FID of each class's generated samples against the '{reference.split}' split's "
                                   f"samples of that class, on the '{features.name}' extractor's FID features; mean "
                                   "and worst over classes",
             "intra_fid.per_class": _rounded(per_class), "intra_fid.counts": json.dumps(counts),
             "intra_fid.extractor_sha256": features.prepared.weights_sha256})

    return score


# ---- Classification Accuracy Score ----

CAS_COLUMNS = (MetricColumn("cas", "CAS (trained on generated)", "higher", ".3f"),
               MetricColumn("cas_real", "CAS of real training data", None, ".3f"),
               MetricColumn("cas_gap", "CAS gap (real - generated)", "lower", ".3f"))


def prepare_cas(request: MetricRequest, max_samples: int = 0):
    from ganzoo_plugins.classifier import TRAINING, train_classifier

    classifier = request.classifier()
    reference = _labelled_reference(request)
    dataset = request.dataset
    held_out = ImageData(reference.samples, reference.labels)
    # The real baseline: the reference classifier is the same network and recipe trained on the real training split;
    # it is tested here on exactly the images the generated-data classifier is tested on.
    real_accuracy = float((classifier.logits(reference.samples).argmax(1) == reference.labels).float().mean())

    def score(given: MetricSamples) -> MetricResult:
        if given.labels is None:
            return _nan(CAS_COLUMNS, "cas")
        labels = _checked_labels(given, dataset.num_classes)
        samples = given.samples
        if max_samples and len(samples) > max_samples:
            samples, labels = samples[:max_samples], labels[:max_samples]
        _, meta = train_classifier(ImageData(samples, labels), held_out, dataset.shape.channels, dataset.num_classes)
        cas = float(meta["accuracy"])
        return MetricResult(
            {"cas": cas, "cas_real": real_accuracy, "cas_gap": real_accuracy - cas},
            {"cas.protocol": f"the reference classifier's network and recipe trained on {len(samples)} generated "
                             f"images with their requested labels ({meta['steps']} steps), tested on the "
                             f"'{reference.split}' split ({len(reference.samples)} images, {reference.subset}); "
                             f"cas_real: the same network trained on the real '{dataset.train_split}' split "
                             f"({classifier.info.get('classifier_trained_on', '?')}), tested on the same images",
             "cas.recipe": json.dumps(TRAINING, sort_keys=True), "cas.train_samples": len(samples),
             "cas.real_classifier_sha256": classifier.weights_sha256})

    return score


# ---- per-class precision and recall ----

PRC_COLUMNS = (MetricColumn("class_precision", "precision within classes (mean)", "higher", ".3f"),
               MetricColumn("class_recall", "recall within classes (mean)", "higher", ".3f"),
               MetricColumn("class_recall_worst", "recall of the worst class", "higher", ".3f"))
NEIGHBOURS = 3


def precision_recall(fake: torch.Tensor, real: torch.Tensor, k: int = NEIGHBOURS) -> tuple[float, float]:
    """Kynkaenniemi et al.'s improved precision and recall (k-NN balls), by torch-fidelity."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    out = prc_features_to_metric(fake.float(), real.float(), prc_neighborhood=k, prc_batch_size=10000,
                                 save_cpu_ram=False, verbose=False)
    return float(out["precision"]), float(out["recall"])


def prepare_class_prc(request: MetricRequest):
    features = request.features()
    reference = _labelled_reference(request)
    real = features.features(reference.samples)
    num_classes = request.dataset.num_classes

    def score(given: MetricSamples) -> MetricResult:
        if given.labels is None:
            return _nan(PRC_COLUMNS, "class_prc")
        labels = _checked_labels(given, num_classes)
        fake = features.features(given.samples)
        precisions, recalls = [], []
        for k in range(num_classes):
            f, r = fake[labels == k], real[reference.labels == k]
            if len(f) <= NEIGHBOURS or len(r) <= NEIGHBOURS:
                raise GanzooError(f"class {k} has {len(f)} generated and {len(r)} reference samples; precision and "
                                  f"recall need more than {NEIGHBOURS} of each (generate more samples)")
            p, r_ = precision_recall(f, r)
            precisions.append(p)
            recalls.append(r_)
        return MetricResult(
            {"class_precision": sum(precisions) / num_classes, "class_recall": sum(recalls) / num_classes,
             "class_recall_worst": min(recalls)},
            {"class_prc.protocol": f"improved precision and recall (k = {NEIGHBOURS}) of each class's generated samples "
                                   f"against the '{reference.split}' split's samples of that class, on the "
                                   f"'{features.name}' extractor's features; means over classes, and the lowest recall",
             "class_prc.precision_per_class": _rounded(precisions), "class_prc.recall_per_class": _rounded(recalls),
             "class_prc.extractor_sha256": features.prepared.weights_sha256})

    return score


def _cas(max_samples: int = 0) -> MetricSpec:
    if max_samples < 0:
        raise GanzooError(f"metric option max_samples must be >= 0 (0: all), got {max_samples}")
    return MetricSpec(
        name="cas",
        description="Classification Accuracy Score: a classifier trained on generated images, tested on held-out "
                    "real ones, beside the same classifier trained on real images",
        columns=CAS_COLUMNS, prepare=lambda request: prepare_cas(request, max_samples), applies=_applies,
        needs=("samples", "labels", "classifier", "reference"), comparable=("cas.real_classifier_sha256",),
        paper="Ravuri & Vinyals 2019, Classification Accuracy Score for Conditional Generative Models "
              "(arXiv:1905.10887)",
        options={"max_samples": Option(0, "train the classifier on at most this many generated images (0: all)",
                                       late=True)},
        configure=lambda o: _cas(o["max_samples"]))


@hookimpl
def ganzoo_metrics():
    return [
        MetricSpec(
            name="class-accuracy",
            description="the reference classifier's accuracy on generated images against the class requested",
            columns=ACCURACY_COLUMNS, prepare=prepare_accuracy, applies=_applies,
            needs=("samples", "labels", "classifier"), comparable=("cond_accuracy.classifier_sha256",),
            paper="'GAN-test' of Shmelkov et al. 2018, How good is my GAN? (arXiv:1807.09499)"),
        MetricSpec(
            name="intra-fid",
            description="FID within each class against that class's reference images: mean and worst class",
            columns=INTRA_COLUMNS, prepare=prepare_intra_fid, applies=_applies,
            needs=("samples", "labels", "features", "reference"), comparable=("intra_fid.extractor_sha256",),
            paper="Miyato & Koyama 2018, cGANs with Projection Discriminator (arXiv:1802.05637)"),
        _cas(),
        MetricSpec(
            name="class-prc",
            description="precision and recall within each class (k-NN, k = 3): mean, and the worst class's recall",
            columns=PRC_COLUMNS, prepare=prepare_class_prc, applies=_applies,
            needs=("samples", "labels", "features", "reference"), comparable=("class_prc.extractor_sha256",),
            paper="Kynkaenniemi et al. 2019, Improved Precision and Recall Metric (arXiv:1904.06991), per class"),
    ]
