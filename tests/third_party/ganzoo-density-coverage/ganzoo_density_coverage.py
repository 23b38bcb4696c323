"""Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative Models").

Both use k-nearest-neighbour balls around the *real* samples only, which makes them robust to the outliers that
inflate k-NN precision (a generated outlier lands in no real ball):
  density  = 1/(k M) sum_j sum_i 1[ ||Y_j - X_i|| < r_i ]   (how many real balls each generated sample falls in;
             about 1 when the generated samples follow the real ones, above 1 when they crowd where reals are dense)
  coverage = 1/N sum_i 1[ min_j ||Y_j - X_i|| < r_i ]        (the share of real balls holding a generated sample)
with r_i the distance from real sample X_i to its k-th nearest real neighbour, N real and M generated samples.
Images are compared in the feature space FID uses (the evaluation's extractor); vectors (2-D points) as they are.
"""
from __future__ import annotations

import torch

from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import MetricColumn, MetricResult, MetricSpec, Option


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5, chunk: int = 2048) -> dict[str, float]:
    """Density and coverage of `fake` (M x F) against `real` (N x F) with k-NN balls, in chunks of distances (so
    that 10,000 x 10,000 pairs stay a few hundred MB)."""
    if len(real) <= k:
        raise GanzooError(f"density/coverage with k={k} needs more than {k} real samples, got {len(real)}")
    real, fake = real.double(), fake.double()
    # the k-th nearest real neighbour of each real sample; the smallest distance is the sample to itself
    radii = torch.cat([torch.cdist(part, real).kthvalue(k + 1, dim=1).values for part in real.split(chunk)])
    inside_count, covered = 0.0, torch.zeros(len(real), dtype=torch.bool)
    for part in fake.split(chunk):
        inside = torch.cdist(part, real) < radii.unsqueeze(0)  # fake j inside real ball i
        inside_count += float(inside.double().sum())
        covered |= inside.any(dim=0)
    return {"density": inside_count / (k * len(fake)), "coverage": float(covered.double().mean())}


def metric(k: int = 5, real_samples: int = 10_000) -> MetricSpec:
    if k < 1 or real_samples <= k:
        raise GanzooError(f"metric 'density-coverage' needs k >= 1 and real_samples > k, got {k}, {real_samples}")

    def prepare(request):
        """Once per evaluation: the real side's features (or the vectors themselves), at most real_samples of them
        (a seeded subset, as Naeem et al. use 10,000)."""
        images = request.dataset.shape.kind == "image"
        features = request.features() if images else None
        reference = request.reference().samples
        if len(reference) > real_samples:
            pick = torch.randperm(len(reference), generator=torch.Generator().manual_seed(request.seed))
            reference = reference[pick[:real_samples].sort().values]
        real = features.features(reference) if images else reference.float()

        def score(given):
            fake = features.features(given.samples) if images else given.samples.float()
            protocol = {"density_coverage.k": k, "density_coverage.real_samples": len(real),
                        "density_coverage.space": (f"{features.name} features ({features.prepared.feature_layers['fid']})"
                                                   if images else "the samples themselves")}
            return MetricResult(density_coverage(real, fake, k), protocol)

        return score

    return MetricSpec(
        name="density-coverage",
        description=f"density and coverage (k={k} nearest-neighbour balls around real samples), robust to outliers",
        columns=(MetricColumn("coverage", "coverage", "higher", ".3f"),
                 MetricColumn("density", "density", None, ".3f")),  # best near 1, not "higher": not ranked
        prepare=prepare, needs=("samples", "reference", "features"),
        comparable=("density_coverage.k", "density_coverage.space", "density_coverage.real_samples"),
        paper="Naeem et al. 2020, Reliable Fidelity and Diversity Metrics for Generative Models (arXiv:2002.09797)",
        options={"k": Option(5, "nearest neighbours that set each real ball's radius (5 as published)"),
                 "real_samples": Option(10_000, "real samples at most (a seeded subset of a larger reference)")},
        configure=lambda options: metric(options["k"], options["real_samples"]),
    )


@hookimpl
def ganzoo_metrics():
    return [metric()]
