"""Each variant's losses against the formula written out by hand on fixed numbers."""
import math

import pytest
import torch

from ganzoo import registry
from ganzoo.specs import DiscriminatorOutput

REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([-3.0, 0.0, 1.5])
REAL_F = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
FAKE_F = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])


def out(logits, features=None):
    return DiscriminatorOutput(logits, features if features is not None else torch.zeros(len(logits), 1))


def sig(x):
    return 1 / (1 + math.exp(-x))


def mean(xs):
    return sum(xs) / len(xs)


BCE_D = mean([-math.log(sig(r)) for r in REAL.tolist()]) + mean([-math.log(1 - sig(f)) for f in FAKE.tolist()])


@pytest.mark.parametrize("name, d_expected, g_expected", [
    ("vanilla", BCE_D, mean([-math.log(sig(f)) for f in FAKE.tolist()])),
    ("minimax", BCE_D, mean([math.log(1 - sig(f)) for f in FAKE.tolist()])),
    ("lsgan", mean([(r - 1) ** 2 for r in REAL.tolist()]) + mean([f ** 2 for f in FAKE.tolist()]),
     mean([(f - 1) ** 2 for f in FAKE.tolist()])),
    ("hinge", mean([max(0, 1 - r) for r in REAL.tolist()]) + mean([max(0, 1 + f) for f in FAKE.tolist()]),
     -mean(FAKE.tolist())),
    # the Wasserstein critic: E[D(G(z))] - E[D(x)], the generator -E[D(G(z))]
    ("wgan", mean(FAKE.tolist()) - mean(REAL.tolist()), -mean(FAKE.tolist())),
    ("wgan-gp", mean(FAKE.tolist()) - mean(REAL.tolist()), -mean(FAKE.tolist())),
    # R1 and DRAGAN regularise the non-saturating GAN: their losses are vanilla's (the penalties are tested apart)
    ("r1", BCE_D, mean([-math.log(sig(f)) for f in FAKE.tolist()])),
    ("dragan", BCE_D, mean([-math.log(sig(f)) for f in FAKE.tolist()])),
])
def test_losses_match_their_formulas(name, d_expected, g_expected):
    spec = registry.variant(name)
    assert spec.discriminator_loss(out(REAL), out(FAKE)).item() == pytest.approx(d_expected, rel=1e-6)
    assert spec.generator_loss(out(FAKE), None).item() == pytest.approx(g_expected, rel=1e-6)


def test_feature_matching_uses_mean_features():
    spec = registry.variant("feature-matching")
    assert spec.generator_needs_real
    # E f(x) = (3, 2), E f(G(z)) = (1, 1): squared distance 4 + 1
    loss = spec.generator_loss(out(FAKE, FAKE_F), out(REAL, REAL_F))
    assert loss.item() == pytest.approx(5.0)
    assert spec.discriminator_loss(out(REAL), out(FAKE)).item() == pytest.approx(BCE_D, rel=1e-6)


def test_bce_losses_are_stable_for_extreme_logits():
    big = torch.tensor([80.0, -80.0])
    for name in ("vanilla", "minimax"):
        spec = registry.variant(name)
        assert torch.isfinite(spec.discriminator_loss(out(big), out(-big)))
        assert torch.isfinite(spec.generator_loss(out(big), None))


def test_relativistic_average_losses():
    """RaGAN: D -E_r log sig(C(x_r) - E C(x_f)) - E_f log(1 - sig(C(x_f) - E C(x_r))); G the same, roles swapped."""
    spec = registry.variant("ragan")
    assert spec.generator_needs_real and spec.equilibrium is None
    r, f = REAL.tolist(), FAKE.tolist()
    d_expected = mean([-math.log(sig(x - mean(f))) for x in r]) + mean([-math.log(1 - sig(x - mean(r))) for x in f])
    g_expected = mean([-math.log(sig(x - mean(r))) for x in f]) + mean([-math.log(1 - sig(x - mean(f))) for x in r])
    assert spec.discriminator_loss(out(REAL), out(FAKE)).item() == pytest.approx(d_expected, rel=1e-6)
    assert spec.generator_loss(out(FAKE), out(REAL)).item() == pytest.approx(g_expected, rel=1e-6)
