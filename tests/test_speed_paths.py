"""Speed options (TrainConfig precision, adam, compile, channels_last, threads) on CPU: the fast paths give the
plain path's losses (bit for bit where the computation is the same, within float rounding where it is not),
evaluation stays float32 whatever training used, and bad values fail in one line."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import ganzoo
from ganzoo import registry
from ganzoo.config import TrainConfig
from ganzoo.data import load_split
from ganzoo.errors import GanzooError
from ganzoo.specs import DiscriminatorOutput as Out
from ganzoo.training import _EpochBatches

LOSSES = ["d_loss", "g_loss", "d_real", "d_fake"]
SMALL = dict(steps=5, batch_size=16, seed=1)


def train(tmp_path, name, **settings):
    return ganzoo.train(out=tmp_path / name, progress=False, **{**SMALL, **settings})


def losses(run) -> np.ndarray:
    return run.read_log()[LOSSES].to_numpy()


def weights(run) -> dict:
    state = torch.load(run.path / "checkpoint.pt", weights_only=True)
    return {f"{part}.{k}": v for part in ("generator", "discriminator") for k, v in state[part].items()}


def by_hand(variant_name: str, arch_name: str, steps: int, batch_size: int, seed: int, fused: bool) -> dict:
    """The recipe written out plainly (one D step, then one G step on the same fake batch): final weights."""
    variant = registry.variant(variant_name)
    shape = registry.dataset("mnist5k").shape
    images = load_split("mnist5k", "train").images
    torch.manual_seed(seed)
    G = registry.architecture(arch_name).build_generator(100, shape)
    D = registry.architecture(arch_name).build_discriminator(shape)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=fused or None)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=fused or None)
    noise = torch.Generator().manual_seed(seed)
    batches = _EpochBatches(images, batch_size, seed)
    for step in range(steps):
        real_x, _ = batches(step)
        fake_x = G(torch.randn(batch_size, 100, generator=noise))
        d_loss = variant.discriminator_loss(Out(*D(real_x)), Out(*D(fake_x.detach())))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        fake = Out(*D(fake_x))
        with torch.no_grad():  # after D(fake): BatchNorm's running statistics depend on the order
            real_now = Out(*D(real_x)) if variant.generator_needs_real else None
        g_loss = variant.generator_loss(fake, real_now)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
    return {**{f"generator.{k}": v for k, v in G.state_dict().items()},
            **{f"discriminator.{k}": v for k, v in D.state_dict().items()}}


@pytest.mark.parametrize("adam", ["fused", "for-loop"])
@pytest.mark.parametrize("variant,arch", [("vanilla", "mlp"), ("feature-matching", "dcgan")])
def test_the_loop_is_the_plain_recipe_bit_for_bit(tmp_path, variant, arch, adam):
    run = train(tmp_path, "r", variant=variant, arch=arch, adam=adam)
    expected = by_hand(variant, arch, fused=adam == "fused", **SMALL)
    got = weights(run)
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_settings_that_keep_the_computation_are_bit_identical(tmp_path):
    plain = train(tmp_path, "plain", arch="mlp")
    # The mlp has no conv weights, and a 1-channel NHWC batch is the same memory: channels-last changes nothing.
    # threads=N with N torch's current count is the default path.
    same = train(tmp_path, "same", arch="mlp", channels_last=True, threads=torch.get_num_threads())
    assert np.array_equal(losses(plain), losses(same))
    assert all(torch.equal(a, b) for a, b in zip(weights(plain).values(), weights(same).values()))


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_fast_paths_match_the_plain_losses_within_float_rounding(tmp_path, arch):
    plain = losses(train(tmp_path, "plain", arch=arch, adam="for-loop"))
    for name, settings in {"fused": dict(adam="fused"), "foreach": dict(adam="foreach"),
                           "nhwc": dict(channels_last=True), "one-thread": dict(threads=1)}.items():
        fast = losses(train(tmp_path, name, arch=arch, **settings))
        # Step 1 is computed before any update: float32 rounding only. Later steps carry Adam's amplification
        # of that rounding (a weight with a near-zero gradient moves by up to lr either way), still tiny.
        np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(fast, plain, rtol=2e-3, atol=1e-4, err_msg=name)


def test_bf16_autocast_is_close_but_a_different_run(tmp_path):
    plain = train(tmp_path, "plain", arch="dcgan")
    bf16 = train(tmp_path, "bf16", arch="dcgan", precision="bf16")
    np.testing.assert_allclose(losses(bf16)[0], losses(plain)[0], rtol=2e-2, atol=1e-3)  # bfloat16: 8-bit mantissa
    assert not np.array_equal(losses(bf16), losses(plain))
    assert bf16.config.key() != plain.config.key()
    stored = json.loads((bf16.path / "config.json").read_text())
    assert stored["config"]["precision"] == "bf16"
    assert not torch.is_autocast_enabled("cpu")
    assert all(v.dtype == torch.float32 for k, v in weights(bf16).items() if v.is_floating_point())


def test_compile_matches_the_plain_losses(tmp_path):
    pytest.importorskip("torch._inductor")
    plain = losses(train(tmp_path, "plain", arch="mlp", steps=3))
    compiled = train(tmp_path, "compiled", arch="mlp", steps=3, compile="default")
    np.testing.assert_allclose(losses(compiled), plain, rtol=1e-4, atol=1e-6)
    # checkpoints hold the plain modules' names (no torch.compile wrapper prefix), so sample/eval load them
    assert not any("_orig_mod" in k for k in weights(compiled))
    assert ganzoo.sample(compiled.path, n=4).shape == (4, 1, 28, 28)


def test_evaluation_is_float32_whatever_training_used(tmp_path, reference_classifier):
    run = train(tmp_path, "r", arch="dcgan", steps=4, precision="bf16", channels_last=True, eval_every=4,
                eval_samples=200)
    again = ganzoo.evaluate(run, n_fake=200, seed=0, progress=False)
    # the in-training score (eval.csv keeps 8 significant digits) is the checkpoint's, scored afresh in float32
    assert f"{run.stats['final_fid']:.8g}" == f"{again.metrics['fid']:.8g}"


def test_threads_are_restored_after_training(tmp_path):
    before = torch.get_num_threads()
    train(tmp_path, "r", steps=2, threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(GanzooError):
        train(tmp_path, "bad", steps=2, threads=1, dataset="no-such-dataset")
    assert torch.get_num_threads() == before


def test_speed_settings_other_than_precision_leave_the_run_identity_alone(tmp_path):
    base = TrainConfig()
    for settings in (dict(adam="for-loop"), dict(compile="max-autotune"), dict(channels_last=True), dict(threads=1)):
        assert TrainConfig(**settings).key() == base.key(), settings
    assert TrainConfig(precision="bf16").key() != base.key()
    # fields added later stay out of the identity at their default: earlier runs keep their keys
    assert "precision" not in base.identity()
    # a run may resume with other operational settings, not with another precision
    train(tmp_path, "r", steps=2, adam="for-loop")
    train(tmp_path, "r", steps=2, adam="fused", threads=1)
    with pytest.raises(GanzooError, match=r"already holds a different run \(precision='fp32'\)"):
        train(tmp_path, "r", steps=2, precision="bf16")


def test_resume_with_another_adam_kernel_uses_the_new_one(tmp_path, monkeypatch):
    from ganzoo import checkpoint

    straight = train(tmp_path, "straight", steps=20, checkpoint_every=10, adam="foreach")
    real_save = checkpoint.save

    def save_then_crash(path, payload):
        sha = real_save(path, payload)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, "resumed", steps=20, checkpoint_every=10, adam="for-loop")
    monkeypatch.setattr(checkpoint, "save", real_save)
    loaded = []
    real_load = torch.optim.Adam.load_state_dict

    def spy(self, state):
        real_load(self, state)
        loaded.append({k: self.param_groups[0][k] for k in ("fused", "foreach")})

    monkeypatch.setattr(torch.optim.Adam, "load_state_dict", spy)
    resumed = train(tmp_path, "resumed", steps=20, checkpoint_every=10, adam="foreach")
    assert loaded == [{"fused": None, "foreach": True}] * 2
    # for-loop and foreach Adam compute the same update; the resumed run lands next to the straight one
    np.testing.assert_allclose(losses(resumed), losses(straight), rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize("settings,message", [
    (dict(precision="fp16"), "precision must be one of fp32, bf16; got 'fp16'"),
    (dict(adam="sgd"), "adam must be one of fused, foreach, for-loop; got 'sgd'"),
    (dict(compile="fast"), "compile must be one of off, default, reduce-overhead, max-autotune"),
    (dict(channels_last="yes"), "channels-last must be true or false, got 'yes'"),
    (dict(threads=-1), "threads must be a non-negative integer (0: torch's default), got -1"),
    (dict(threads=1.5), "threads must be a non-negative integer"),
])
def test_bad_speed_settings_fail_in_one_line(settings, message):
    with pytest.raises(GanzooError) as info:
        TrainConfig(**settings)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_compile_accepts_booleans_from_python():
    assert TrainConfig(compile=True).compile == "default"
    assert TrainConfig(compile=False).compile == "off"


def test_cli_speed_options(tmp_path, cli):
    code, out, err = cli("train", "--steps", "3", "--batch-size", "16", "--arch", "dcgan", "--channels-last",
                         "--adam", "foreach", "--threads", "1", "--out", tmp_path / "r", "--quiet")
    assert code == 0, err
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    assert stored["config"]["channels_last"] is True and stored["config"]["adam"] == "foreach"
    assert stored["config"]["threads"] == 1 and stored["resolved"]["threads"] == 1
    code, _, err = cli("train", "--precision", "fp16", "--steps", "3", "--out", tmp_path / "x")
    assert code == 2 and err.strip().count("\n") == 0 and "precision must be one of fp32, bf16" in err
    assert not (tmp_path / "x").exists()
    log = pd.read_csv(tmp_path / "r" / "log.csv")
    assert len(log) == 3
