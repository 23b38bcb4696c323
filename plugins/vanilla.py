"""The original GAN with the non-saturating generator loss (Goodfellow et al. 2014, section 3)."""
import torch.nn.functional as F

from ganzoo.hookspecs import hookimpl
from ganzoo.specs import VariantSpec


def bce_discriminator_loss(real, fake):
    """E[-log D(x)] + E[-log(1 - D(G(z)))], on logits: real labelled 1, fake labelled 0."""
    return F.softplus(-real.logits).mean() + F.softplus(fake.logits).mean()


def non_saturating_generator_loss(fake, real=None):
    """-E[log D(G(z))]: strong gradients early on, when D rejects fakes confidently."""
    return F.softplus(-fake.logits).mean()


@hookimpl
def ganzoo_variants():
    return [VariantSpec(
        name="vanilla",
        description="BCE discriminator, non-saturating generator loss -E[log D(G(z))]",
        discriminator_loss=bce_discriminator_loss,
        generator_loss=non_saturating_generator_loss,
        paper="Goodfellow et al. 2014, Generative Adversarial Nets (arXiv:1406.2661)",
    )]
