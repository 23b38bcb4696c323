"""LeCam regularisation (Tseng et al. 2021, "Regularizing Generative Adversarial Networks under Limited Data").

D's loss gains lambda * (E[(D(x) - a_F)^2] + E[(D(G(z)) - a_R)^2]), where a_R and a_F are exponential moving
averages of D's mean output on real and generated samples: D is pulled towards the outputs it gave the *other*
side, which bounds how far apart it can push them (a LeCam divergence). The averages are the variant's state:
declared in VariantSpec.state, they are checkpointed by the training loop and handed back by name, so a run
killed and resumed continues from the averages it had (not from 0) and ends bit-identical to an uninterrupted one.
"""
from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import Option, Penalty, VariantSpec
from ganzoo_plugins.vanilla import bce_discriminator_loss, non_saturating_generator_loss


def lecam_penalty(real, fake, state):
    """Read the averages (the hook below updates them, after D's step, so a look-ahead copy never moves them)."""
    return ((real.logits - state["ema_fake"]) ** 2).mean() + ((fake.logits - state["ema_real"]) ** 2).mean()


def update_averages(real, fake, state, decay=0.99):
    state["ema_real"].mul_(decay).add_((1 - decay) * real.logits.mean())
    state["ema_fake"].mul_(decay).add_((1 - decay) * fake.logits.mean())


def lecam(weight: float = 0.3, decay: float = 0.99) -> VariantSpec:
    if weight < 0 or not 0 <= decay < 1:
        raise GanzooError(f"variant 'lecam' needs lambda >= 0 and decay in [0, 1), got {weight}, {decay}")
    return VariantSpec(
        name="lecam",
        description=f"BCE discriminator + {weight:g} LeCam regulariser (moving averages of D's outputs, decay "
                    f"{decay:g}); non-saturating generator",
        discriminator_loss=bce_discriminator_loss,
        generator_loss=non_saturating_generator_loss,
        penalties=(Penalty("lecam", lecam_penalty, weight=weight),),
        after_discriminator_step=lambda real, fake, state: update_averages(real, fake, state, decay),
        state={"ema_real": 0.0, "ema_fake": 0.0},
        options={"lambda": Option(0.3, "weight of the LeCam regulariser"),
                 "decay": Option(0.99, "decay of the moving averages of D's outputs")},
        configure=lambda o: lecam(o["lambda"], o["decay"]),
        paper="Tseng et al. 2021, Regularizing GANs under Limited Data (arXiv:2104.03310)",
    )


@hookimpl
def ganzoo_variants():
    return [lecam()]
