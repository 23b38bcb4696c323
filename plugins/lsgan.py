"""Least-squares GAN with the 0-1 coding a=0, b=1, c=1, on raw discriminator outputs (no sigmoid)."""
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import VariantSpec


def least_squares_discriminator_loss(real, fake):
    """E[(D(x) - 1)^2] + E[D(G(z))^2]."""
    return (real.logits - 1).pow(2).mean() + fake.logits.pow(2).mean()


def least_squares_generator_loss(fake, real=None):
    """E[(D(G(z)) - 1)^2]."""
    return (fake.logits - 1).pow(2).mean()


def raw_score(logits):
    return logits


@hookimpl
def ganzoo_variants():
    return [VariantSpec(
        name="lsgan",
        description="least squares: D E[(D(x)-1)^2] + E[D(G(z))^2], G E[(D(G(z))-1)^2], raw outputs",
        discriminator_loss=least_squares_discriminator_loss,
        generator_loss=least_squares_generator_loss,
        d_value=raw_score,
        paper="Mao et al. 2017, Least Squares Generative Adversarial Networks (arXiv:1611.04076)",
    )]
