"""Hinge-loss GAN (Lim & Ye 2017), the loss of SNGAN and BigGAN: margins on raw critic scores."""
import torch.nn.functional as F

from ganzoo.hookspecs import hookimpl
from ganzoo.specs import VariantSpec
from ganzoo_plugins.lsgan import raw_score


def hinge_discriminator_loss(real, fake):
    """E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))] on raw scores."""
    return F.relu(1 - real.logits).mean() + F.relu(1 + fake.logits).mean()


def hinge_generator_loss(fake, real=None):
    """-E[D(G(z))]."""
    return -fake.logits.mean()


@hookimpl
def ganzoo_variants():
    return [VariantSpec(
        name="hinge",
        description="hinge loss: D E[relu(1-D(x))] + E[relu(1+D(G(z)))], G -E[D(G(z))]",
        discriminator_loss=hinge_discriminator_loss,
        generator_loss=hinge_generator_loss,
        d_value=raw_score,
        equilibrium=None,  # a critic: its scores are unbounded
        paper="Lim & Ye 2017, Geometric GAN (arXiv:1705.02894)",
    )]
