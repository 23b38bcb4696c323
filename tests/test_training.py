"""Training end to end on CPU: outputs, reproducibility, resume, divergence, the Python API."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import ganzoo
from ganzoo import checkpoint
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import VariantSpec
from ganzoo_plugins.vanilla import bce_discriminator_loss

FAST = dict(steps=30, checkpoint_every=10)


def state_of(run_path):
    return torch.load(run_path / "checkpoint.pt", weights_only=True)


def assert_same_weights(a, b):
    for part in ("generator", "discriminator"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"


BUILT_IN_VARIANTS = ["vanilla", "minimax", "lsgan", "feature-matching", "hinge", "wgan", "wgan-gp", "r1", "dragan",
                     "ragan"]
PENALTY_COLUMNS = {"wgan-gp": ["gradient_penalty"], "r1": ["r1"], "dragan": ["dragan_penalty"]}


@pytest.mark.parametrize("variant", BUILT_IN_VARIANTS)
@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_every_variant_trains_with_every_architecture(tmp_path, variant, arch):
    run = ganzoo.train(variant=variant, arch=arch, steps=4, batch_size=16, out=tmp_path / "r", progress=False)
    assert run.status == "completed" and run.step == 4
    for name in ("checkpoint.pt", "config.json", "log.csv", "samples.png", "run.json"):
        assert (run.path / name).is_file()
    log = run.read_log()
    assert list(log.columns) == ["step", "d_loss", "g_loss", "d_real", "d_fake",
                                 *PENALTY_COLUMNS.get(variant, []), "time_s"]
    assert log["step"].tolist() == [1, 2, 3, 4]
    assert np.isfinite(log[["d_loss", "g_loss"]].to_numpy()).all()


def test_run_records_resolved_config(tmp_path):
    run = ganzoo.train(variant="lsgan", out=tmp_path / "r", progress=False, **FAST)
    stored = json.loads((run.path / "config.json").read_text())
    assert stored["config"]["variant"] == "lsgan" and stored["config"]["lr"] == 2e-4
    assert stored["config"]["betas"] == [0.5, 0.999] and stored["config"]["batch_size"] == 64
    assert stored["config"]["latent_dim"] == 100 and stored["config"]["d_steps"] == 1
    resolved = stored["resolved"]
    assert resolved["device"] == "cpu"
    assert resolved["dataset"]["train_images"] == 4000 and resolved["dataset"]["reference_split"] == "test"
    assert resolved["dataset"]["info"]["split_rule"].startswith("stratified")
    assert resolved["variant"]["origin"].startswith("ganzoo ")
    assert run.stats["final"]["d_loss"] > 0 and run.stats["g_images_per_s"] > 0


def test_same_config_and_seed_are_bit_identical(tmp_path):
    a = ganzoo.train(variant="feature-matching", arch="dcgan", steps=12, batch_size=32, seed=3,
                     out=tmp_path / "a", progress=False)
    b = ganzoo.train(variant="feature-matching", arch="dcgan", steps=12, batch_size=32, seed=3,
                     out=tmp_path / "b", progress=False)
    assert_same_weights(state_of(a.path), state_of(b.path))
    columns = ["step", "d_loss", "g_loss", "d_real", "d_fake"]  # time_s is wall-clock time
    pd.testing.assert_frame_equal(a.read_log()[columns], b.read_log()[columns])
    assert a.read_log()[columns].to_csv() == b.read_log()[columns].to_csv()
    c = ganzoo.train(variant="feature-matching", arch="dcgan", steps=12, batch_size=32, seed=4,
                     out=tmp_path / "c", progress=False)
    assert not torch.equal(state_of(a.path)["generator"]["upsample.3.weight"],
                           state_of(c.path)["generator"]["upsample.3.weight"])


def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    straight = ganzoo.train(variant="vanilla", out=tmp_path / "straight", progress=False, **FAST)

    real_save = checkpoint.save
    calls = []

    def save_then_crash(path, payload):
        sha = real_save(path, payload)
        calls.append(payload["step"])
        if len(calls) == 2:  # die right after the checkpoint at step 20, like a killed process
            raise KeyboardInterrupt
        return sha

    monkeypatch.setattr(checkpoint, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        ganzoo.train(variant="vanilla", out=tmp_path / "resumed", progress=False, **FAST)
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert ganzoo.open_run(tmp_path / "resumed").status == "running"
    resumed = ganzoo.train(variant="vanilla", out=tmp_path / "resumed", progress=False, **FAST)
    assert resumed.status == "completed" and resumed.stats["steps_this_session"] == 10
    assert_same_weights(state_of(straight.path), state_of(resumed.path))
    cols = ["step", "d_loss", "g_loss", "d_real", "d_fake"]
    pd.testing.assert_frame_equal(straight.read_log()[cols], resumed.read_log()[cols])


def test_completed_run_is_not_retrained(tmp_path):
    first = ganzoo.train(out=tmp_path / "r", progress=False, **FAST)
    again = ganzoo.train(out=tmp_path / "r", progress=False, **FAST)
    assert again.stats["wall_time_s"] == first.stats["wall_time_s"]


class ExplodingVariant:
    """A variant whose generator loss turns to NaN at step 7."""

    def __init__(self):
        self.calls = 0

    @hookimpl
    def ganzoo_variants(self):
        def g_loss(fake, real=None):
            self.calls += 1
            loss = -fake.logits.mean()
            return loss * float("nan") if self.calls >= 7 else loss

        return [VariantSpec(name="exploding", description="diverges on purpose",
                            discriminator_loss=bce_discriminator_loss, generator_loss=g_loss)]


def test_divergence_stops_keeps_the_log_and_exits_nonzero(tmp_path, register_plugin, cli):
    register_plugin(ExplodingVariant(), "exploding")
    code, _, err = cli("train", "--variant", "exploding", "--steps", "50", "--out", tmp_path / "r", "--quiet")
    assert code == 3
    assert err.strip().count("\n") == 0 and "training diverged at step 7: g_loss not finite" in err
    log = pd.read_csv(tmp_path / "r" / "log.csv")
    assert log["step"].tolist() == list(range(1, 8)) and np.isnan(log["g_loss"].iloc[-1])
    status = json.loads((tmp_path / "r" / "run.json").read_text())
    assert status["status"] == "diverged" and status["step"] == 7
    code, _, err = cli("train", "--variant", "exploding", "--steps", "50", "--out", tmp_path / "r", "--quiet")
    assert code == 2 and "diverged at step 7; pass --overwrite" in err


def test_cli_train_and_sample(tmp_path, cli):
    run_dir = tmp_path / "lsgan-0"
    code, out, err = cli("train", "--variant", "lsgan", "--arch", "mlp", "--dataset", "mnist5k", "--steps", "20",
                         "--seed", "0", "--out", run_dir, "--quiet")
    assert code == 0, err
    assert out.startswith(f"completed: {run_dir}")
    code, out, err = cli("sample", "--run", run_dir, "--n", "300", "--out", tmp_path / "s.npz",
                         "--grid", tmp_path / "grid.png")
    assert code == 0, err
    images = np.load(tmp_path / "s.npz")["images"]
    assert images.shape == (300, 1, 28, 28) and images.dtype == np.uint8
    assert images.min() < 30 and images.max() > 200  # tanh output spans the range
    from PIL import Image

    assert Image.open(tmp_path / "grid.png").size[0] > 28 * 10
    again = ganzoo.sample(run_dir, n=300)
    assert np.array_equal(again.numpy(), images)  # same seed, same images


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "steps must be a positive integer, got 0"),
    (["--batch-size", "-4"], "batch-size must be a positive integer, got -4"),
    (["--latent-dim", "0"], "latent-dim must be a positive integer"),
    (["--lr", "-1"], "lr must be a positive number"),
    (["--device", "cuda:7"], "CUDA is not available"),
    (["--device", "tpu9"], "unknown device 'tpu9'"),
    (["--batch-size", "5000"], "batch size 5000 is larger than the 4000 training images"),
])
def test_bad_training_input(tmp_path, cli, argv, message):
    if "cuda" in argv[-1] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = cli("train", "--out", tmp_path / "r", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_output_folder_with_a_different_run_is_refused(tmp_path, cli):
    run_dir = tmp_path / "r"
    assert cli("train", "--steps", "3", "--out", run_dir, "--quiet")[0] == 0
    before = (run_dir / "checkpoint.pt").read_bytes()
    code, _, err = cli("train", "--steps", "3", "--variant", "lsgan", "--out", run_dir, "--quiet")
    assert code == 2 and "already holds a different run (variant='vanilla')" in err
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    code, _, err = cli("train", "--steps", "3", "--variant", "lsgan", "--out", run_dir, "--quiet", "--overwrite")
    assert code == 0 and ganzoo.open_run(run_dir).config.variant == "lsgan"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, _, err = cli("train", "--steps", "3", "--out", tmp_path / "other", "--quiet")
    assert code == 2 and "is not empty and holds no ganzoo run" in err


def test_architecture_size_mismatch_is_an_error():
    from ganzoo.registry import architecture

    assert architecture("dcgan").image_sizes == (16, 28, 32, 64, 128)
