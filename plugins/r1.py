"""R1 regularisation (Mescheder, Geiger & Nowozin 2018): the non-saturating GAN plus gamma/2 E||grad D(x)||^2 on
real images only; with every=k it is applied lazily on every k-th critic step, scaled by k (StyleGAN2)."""
from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.penalties import gradient_norms
from ganzoo.specs import Option, Penalty, VariantSpec
from ganzoo_plugins.vanilla import bce_discriminator_loss, non_saturating_generator_loss
from ganzoo_plugins.wgan import checked


def r1_penalty(discriminate, real_images):
    """E||grad_x D(x)||^2 over real images (the norm over each image's whole input)."""
    return gradient_norms(discriminate, real_images).pow(2).mean()


def r1(gamma: float = 10.0, every: int = 1) -> VariantSpec:
    if every < 1:
        raise GanzooError(f"variant option every must be a positive integer, got {every}")
    return VariantSpec(
        name="r1",
        description=f"non-saturating GAN + {gamma:g}/2 E||grad D(x)||^2 on real images"
                    + (f", every {every} steps" if every > 1 else ""),
        discriminator_loss=bce_discriminator_loss,
        generator_loss=non_saturating_generator_loss,
        penalties=(Penalty("r1", r1_penalty, weight=gamma / 2, every=every),),
        options={"gamma": Option(10.0, "the penalty is gamma/2 E||grad D(x)||^2"),
                 "every": Option(1, "apply the penalty on every k-th critic step only, scaled by k (lazy)")},
        configure=lambda o: r1(checked("gamma", o["gamma"], o["gamma"] >= 0, ">= 0"), o["every"]),
        paper="Mescheder, Geiger & Nowozin 2018, Which Training Methods for GANs do actually Converge? "
              "(arXiv:1801.04406)",
    )


@hookimpl
def ganzoo_variants():
    return [r1()]
