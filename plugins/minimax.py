"""The literal min-max objective V(D, G): the generator minimises E[log(1 - D(G(z)))]."""
import torch.nn.functional as F

from ganzoo.hookspecs import hookimpl
from ganzoo.specs import VariantSpec
from ganzoo_plugins.vanilla import bce_discriminator_loss


def saturating_generator_loss(fake, real=None):
    """E[log(1 - D(G(z)))] = -E[softplus(logit)]; its gradient vanishes when D rejects fakes confidently."""
    return -F.softplus(fake.logits).mean()


@hookimpl
def ganzoo_variants():
    return [VariantSpec(
        name="minimax",
        description="BCE discriminator, saturating generator loss E[log(1 - D(G(z)))] (the min-max game as stated)",
        discriminator_loss=bce_discriminator_loss,
        generator_loss=saturating_generator_loss,
        paper="Goodfellow et al. 2014, Generative Adversarial Nets (arXiv:1406.2661)",
    )]
