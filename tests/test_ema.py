"""Generator EMA: the running average by hand, resume, and which weights evaluation and sampling use."""
import dataclasses

import pytest
import torch

import ganzoo
from ganzoo import checkpoint, registry
from ganzoo.hookspecs import hookimpl
from ganzoo.sampling import generate

from conftest import assert_same_checkpoints, killed_and_resumed

SETTINGS = dict(arch="dcgan", steps=6, checkpoint_every=3, batch_size=16, progress=False)  # dcgan: BatchNorm buffers


@pytest.fixture
def recorded_generators(register_plugin):
    """A copy of vanilla whose hook after each generator step records G's weights and buffers."""
    seen = []

    def record(generator):
        seen.append(({k: v.clone() for k, v in generator.state_dict().items()}))

    spec = dataclasses.replace(registry.variant("vanilla"), name="vanilla-recorded", after_generator_step=record)

    class Plugin:
        @hookimpl
        def ganzoo_variants(self):
            return [spec]

    register_plugin(Plugin(), "recorded-plugin")
    return seen


def test_ema_is_the_running_average_written_by_hand(tmp_path, recorded_generators):
    decay, start = 0.9, 2
    run = ganzoo.train(variant="vanilla-recorded", ema=decay, ema_start=start, out=tmp_path / "r", **SETTINGS)
    assert len(recorded_generators) == 6
    parameters = {name for name, _ in registry.architecture("dcgan").build_generator(
        100, registry.dataset("mnist5k").shape).named_parameters()}
    expected = None
    for step, weights in enumerate(recorded_generators):
        if expected is None or step < start:
            expected = {k: v.clone() for k, v in weights.items()}  # a copy of G until ema_start
        else:
            expected = {k: (decay * expected[k] + (1 - decay) * v) if k in parameters else v.clone()
                        for k, v in weights.items()}  # buffers (BatchNorm statistics) are G's own
    ema = torch.load(run.checkpoint, weights_only=True)["generator_ema"]
    assert ema.keys() == expected.keys()
    for key in ema:
        torch.testing.assert_close(ema[key], expected[key], rtol=1e-6, atol=1e-7, msg=key)
    plain = torch.load(run.checkpoint, weights_only=True)["generator"]
    assert not torch.equal(plain["upsample.3.weight"], ema["upsample.3.weight"])


def test_sampling_and_evaluation_use_the_averaged_generator(tmp_path):
    run = ganzoo.train(ema=0.5, out=tmp_path / "r", **SETTINGS)
    state = torch.load(run.checkpoint, weights_only=True)
    G = registry.architecture("dcgan").build_generator(100, registry.dataset("mnist5k").shape)
    G.load_state_dict(state["generator_ema"])
    assert torch.equal(ganzoo.sample(run, n=16, seed=3), generate(G, 16, 100, 3))
    G.load_state_dict(state["generator"])
    assert not torch.equal(ganzoo.sample(run, n=16, seed=3), generate(G, 16, 100, 3))


def test_ema_is_part_of_the_identity_and_resumes_bit_identically(tmp_path, monkeypatch, cli):
    straight, resumed = killed_and_resumed(tmp_path, monkeypatch, ema=0.8, ema_start=1, **SETTINGS)
    assert straight.config.key() != ganzoo.TrainConfig(arch="dcgan", steps=6, batch_size=16).key()
    assert resumed.stats["steps_this_session"] == 3
    assert_same_checkpoints(straight, resumed, parts=("generator", "generator_ema", "discriminator"))

    code, _, err = cli("train", "--ema", "1.5", "--steps", "1", "--out", tmp_path / "bad")
    assert code == 2 and "ema must be a decay in [0, 1)" in err and len(err.strip().splitlines()) == 1
