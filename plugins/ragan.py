"""Relativistic average GAN (Jolicoeur-Martineau 2018): D estimates how much more realistic real data is than
the average generated image (and the generator the reverse), with the BCE loss on C(x) - E C(x_f)."""
import torch.nn.functional as F

from ganzoo.hookspecs import hookimpl
from ganzoo.specs import VariantSpec
from ganzoo_plugins.lsgan import raw_score


def relativistic_average_discriminator_loss(real, fake):
    """-E_x[log sigmoid(C(x) - E C(x_f))] - E_f[log(1 - sigmoid(C(x_f) - E C(x)))]."""
    return F.softplus(-(real.logits - fake.logits.mean())).mean() + \
        F.softplus(fake.logits - real.logits.mean()).mean()


def relativistic_average_generator_loss(fake, real):
    """The same with real and generated swapped: the generator gets gradients through both terms."""
    return F.softplus(-(fake.logits - real.logits.mean())).mean() + \
        F.softplus(real.logits - fake.logits.mean()).mean()


@hookimpl
def ganzoo_variants():
    return [VariantSpec(
        name="ragan",
        description="relativistic average GAN: BCE on C(x) - E C(G(z)) and C(G(z)) - E C(x), both players",
        discriminator_loss=relativistic_average_discriminator_loss,
        generator_loss=relativistic_average_generator_loss,
        generator_needs_real=True,
        d_value=raw_score,
        equilibrium=None,  # C is a raw critic score; only differences of it are probabilities
        paper="Jolicoeur-Martineau 2018, The relativistic discriminator: a key element missing from standard GAN "
              "(arXiv:1807.00734)",
    )]
