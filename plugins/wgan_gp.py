"""WGAN-GP (Gulrajani et al. 2017): the Wasserstein critic with the two-sided penalty lambda (||grad D(x^)|| - 1)^2
on uniform interpolates x^ of real and generated images; Adam 1e-4, betas (0, 0.9), 5 critic steps."""
from ganzoo.hookspecs import hookimpl
from ganzoo.penalties import gradient_norms, interpolates
from ganzoo.specs import Option, Penalty, Recipe, VariantSpec
from ganzoo_plugins.lsgan import raw_score
from ganzoo_plugins.wgan import checked, critic_generator_loss, critic_loss


def gradient_penalty(discriminate, real_images, fake_images, rng):
    """E[(||grad D(x^)||_2 - 1)^2], the norm over each interpolate's whole image."""
    points = interpolates(real_images, fake_images, rng)
    return (gradient_norms(discriminate, points) - 1).pow(2).mean()


def wgan_gp(weight: float = 10.0) -> VariantSpec:
    return VariantSpec(
        name="wgan-gp",
        description=f"Wasserstein critic + {weight:g} (||grad D(x^)|| - 1)^2 on real/fake interpolates",
        discriminator_loss=critic_loss,
        generator_loss=critic_generator_loss,
        d_value=raw_score,
        equilibrium=None,
        penalties=(Penalty("gradient_penalty", gradient_penalty, weight=weight),),
        recipe=Recipe(d_steps=5, optimizer="adam", lr=1e-4, betas=(0.0, 0.9)),
        options={"lambda": Option(10.0, "weight of the gradient penalty")},
        configure=lambda o: wgan_gp(checked("lambda", o["lambda"], o["lambda"] >= 0, ">= 0")),
        paper="Gulrajani et al. 2017, Improved Training of Wasserstein GANs (arXiv:1704.00028)",
    )


@hookimpl
def ganzoo_variants():
    return [wgan_gp()]
