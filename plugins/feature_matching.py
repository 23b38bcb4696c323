"""Feature matching: the generator matches the mean of an intermediate discriminator layer on real data."""
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import VariantSpec
from ganzoo_plugins.vanilla import bce_discriminator_loss


def feature_matching_generator_loss(fake, real):
    """||E_x f(x) - E_z f(G(z))||_2^2 over the discriminator's intermediate features f."""
    return (real.features.mean(0) - fake.features.mean(0)).pow(2).sum()


@hookimpl
def ganzoo_variants():
    return [VariantSpec(
        name="feature-matching",
        description="BCE discriminator; G minimises ||E f(x) - E f(G(z))||^2 on intermediate D features",
        discriminator_loss=bce_discriminator_loss,
        generator_loss=feature_matching_generator_loss,
        paper="Salimans et al. 2016, Improved Techniques for Training GANs (arXiv:1606.03498)",
        generator_needs_real=True,
    )]
