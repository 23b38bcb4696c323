"""DRAGAN (Kodali et al. 2017): the non-saturating GAN plus lambda (||grad D(x^)|| - 1)^2 at points x^ near the
real data, x^ = x + alpha * delta with delta ~ c * std(x) * U[0, 1) per pixel and alpha ~ U[0, 1) per image (the
authors' code); the reference recipe, as Lucic et al. 2018 compared it."""
import torch

from ganzoo.hookspecs import hookimpl
from ganzoo.penalties import gradient_norms, interpolates
from ganzoo.specs import Option, Penalty, VariantSpec
from ganzoo_plugins.vanilla import bce_discriminator_loss, non_saturating_generator_loss
from ganzoo_plugins.wgan import checked


def dragan_penalty(discriminate, real_images, rng, scale: float = 0.5):
    """E[(||grad D(x^)||_2 - 1)^2] at perturbed real images."""
    noise = torch.rand(real_images.shape, device=real_images.device, generator=rng)
    perturbed = real_images + scale * real_images.std() * noise
    return (gradient_norms(discriminate, interpolates(real_images, perturbed, rng)) - 1).pow(2).mean()


def dragan(weight: float = 10.0, scale: float = 0.5) -> VariantSpec:
    return VariantSpec(
        name="dragan",
        description=f"non-saturating GAN + {weight:g} (||grad D(x^)|| - 1)^2 around real images",
        discriminator_loss=bce_discriminator_loss,
        generator_loss=non_saturating_generator_loss,
        penalties=(Penalty("dragan_penalty", lambda discriminate, real_images, rng: dragan_penalty(
            discriminate, real_images, rng, scale), weight=weight),),
        options={"lambda": Option(10.0, "weight of the gradient penalty"),
                 "scale": Option(0.5, "perturbations are up to scale * std(x) per pixel")},
        configure=lambda o: dragan(checked("lambda", o["lambda"], o["lambda"] >= 0, ">= 0"),
                                   checked("scale", o["scale"], o["scale"] >= 0, ">= 0")),
        paper="Kodali et al. 2017, On Convergence and Stability of GANs (arXiv:1705.07215)",
    )


@hookimpl
def ganzoo_variants():
    return [dragan()]
