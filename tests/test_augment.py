"""Small data (issue 21): differentiable augmentation of everything D sees, ADA's adaptive p, training subsets, and
the overfitting signal."""
import json

import pytest
import torch
from torch import nn

import ganzoo
from ganzoo import augment
from ganzoo.config import TrainConfig
from ganzoo.data import load_split, training_subset
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import ArchitectureSpec, DiscriminatorOutput, ImageData
from ganzoo.steps import Discriminate
from ganzoo.training import overfitting_signal, resolve
from ganzoo_plugins import ada as ada_plugin
from ganzoo_plugins import diffaugment as da

from conftest import assert_same_checkpoints, killed_and_resumed

SMALL = dict(steps=4, batch_size=16, checkpoint_every=2)
ADA_TRANSFORMS = ada_plugin.GEOMETRIC + ada_plugin.COLOR


def assert_same_tree(a, b, where=""):
    """Bit-identical nested checkpoint parts (optimizer states, an augmentation's state and generator)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def saved(run, part):
    return torch.load(run.checkpoint, weights_only=True)[part]


def images(n=8, channels=1, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=g) * 2 - 1


def every_transform():
    """(name, apply(images, rng)) for each DiffAugment policy and each ADA transform at p = 1."""
    for name in da.POLICIES:
        spec = da.diffaugment(name)
        yield f"diffaugment {name}", (lambda x, rng, spec=spec: spec.apply(x, {}, rng))
    for name in ADA_TRANSFORMS:
        spec = ada_plugin.ada(name, p=1.0)
        state = {"p": torch.tensor(1.0)}
        yield f"ada {name}", (lambda x, rng, spec=spec, state=state: spec.apply(x, state, rng))


@pytest.mark.parametrize("name,apply", list(every_transform()), ids=[n for n, _ in every_transform()])
def test_each_transform_is_differentiable_in_range_and_drawn_per_sample_from_its_rng(name, apply):
    channels = 3 if name.endswith("saturation") else 1
    x = images(channels=channels).requires_grad_(True)
    out = apply(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    assert out.min() >= -1 and out.max() <= 1, name
    (weights,) = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum(), x)
    assert weights.abs().sum() > 0, f"{name}: no gradient reaches the input"
    # the same image eight times gets different transforms (a flip has only two): parameters drawn per sample
    same = images(1, channels).expand(8, -1, -1, -1).contiguous()
    out = apply(same, torch.Generator().manual_seed(2))
    assert len({tuple(o.flatten().tolist()) for o in out}) >= (2 if name.endswith("xflip") else 3), name
    # ...and from the generator it is given: the same state, the same draw; another state, another draw
    assert torch.equal(apply(same, torch.Generator().manual_seed(2)), out)
    assert not torch.equal(apply(same, torch.Generator().manual_seed(3)), out)


def test_ada_at_p_zero_leaves_every_image_bit_identical():
    spec = ada_plugin.ada(",".join(ADA_TRANSFORMS), p=0.0)
    x = images(16, channels=3)
    assert torch.equal(spec.apply(x, {"p": torch.tensor(0.0)}, torch.Generator().manual_seed(0)), x)
    moved = spec.apply(x, {"p": torch.tensor(1.0)}, torch.Generator().manual_seed(0))
    assert (moved - x).abs().amax(dim=(1, 2, 3)).min() > 0  # at p = 1 every image changes


def test_ada_update_rule_against_a_hand_computation():
    state = {k: torch.tensor(v) for k, v in {"p": 0.0, "r_t": 0.0, "sign_sum": 0.0, "sign_count": 0.0,
                                             "seen": 0.0}.items()}
    batch = torch.zeros(4, 1, 2, 2)

    def step(d_step, signs):
        ada_plugin.ada_adjust(state, torch.tensor(signs), batch, d_step, target=0.6, speed=1000.0, interval=2)

    step(0, [1.0, 1.0, -1.0, 1.0])
    assert state["p"] == 0 and state["r_t"] == 0  # not yet: every 2 discriminator steps
    step(1, [1.0, 1.0, 1.0, 1.0])
    # r_t = (3 - 1 + 4) / 8 = 0.75 > 0.6: p += sign(0.15) * (2 steps x 4 images) / 1000
    assert state["r_t"].item() == pytest.approx(0.75)
    assert state["p"].item() == pytest.approx(0.008)
    step(2, [1.0, -1.0, -1.0, 1.0])
    step(3, [1.0, 1.0, -1.0, -1.0])  # r_t = 0 < 0.6: p -= 0.008
    assert state["r_t"].item() == 0 and state["p"].item() == pytest.approx(0.0, abs=1e-9)
    step(4, [-1.0] * 4)
    step(5, [-1.0] * 4)  # would go below 0: clamped
    assert state["p"].item() == 0.0 and state["r_t"].item() == -1.0
    state["p"] = torch.tensor(0.995)
    step(6, [1.0] * 4)
    step(7, [1.0] * 4)  # would go above 1: clamped
    assert state["p"].item() == 1.0


def test_ada_p_stays_in_the_unit_interval_over_random_signs():
    state = {k: torch.tensor(0.0) for k in ("p", "r_t", "sign_sum", "sign_count", "seen")}
    g = torch.Generator().manual_seed(0)
    for d_step in range(400):
        signs = torch.where(torch.rand(8, generator=g) < 0.3 + 0.6 * (d_step // 100 % 2), 1.0, -1.0)
        ada_plugin.ada_adjust(state, signs, torch.zeros(8, 1, 2, 2), d_step, speed=200.0)
        assert 0.0 <= state["p"].item() <= 1.0


class _Recorder(nn.Module):
    """An MLP discriminator that keeps every input it is shown."""

    seen: list = []

    def __init__(self, shape):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(shape.numel, 32), nn.LeakyReLU(0.2))
        self.head = nn.Linear(32, 1)

    def forward(self, x):
        _Recorder.seen.append(x.detach().clone())
        f = self.body(x)
        return self.head(f).squeeze(1), f


@pytest.fixture
def recording_arch(register_plugin):
    from ganzoo_plugins.mlp import MLPGenerator

    class Plugin:
        @hookimpl
        def ganzoo_architectures(self):
            return [ArchitectureSpec(name="recorder", description="records D's inputs",
                                     build_generator=lambda latent, shape: MLPGenerator(latent, shape),
                                     build_discriminator=_Recorder)]

    register_plugin(Plugin(), "recorder")
    _Recorder.seen = []
    return _Recorder.seen


def test_every_image_d_sees_is_augmented_real_and_generated_in_both_steps_and_in_r1(tmp_path, recording_arch):
    """Cutout zeroes a square of at least 7 x 7 pixels of every image; real digits never hold an exact 0 (v / 127.5 - 1
    for integer v) and a tanh output almost never does. R1 asks D once more per step: four D inputs a step."""
    run = ganzoo.train(variant="r1", arch="recorder", out=tmp_path / "run", progress=False, steps=3, batch_size=16,
                       augment="diffaugment", augment_options={"policy": "cutout"})
    zeros = [(x == 0).flatten(1).sum(1) for x in recording_arch[:12]]  # 3 steps x (real, fake, R1 real, G fake)
    assert len(recording_arch) >= 12
    for i, count in enumerate(zeros):
        assert count.min() >= 49, f"D input {i} was not augmented"
    # real and generated inputs get the same distribution of squares: their mean zeroed areas agree
    real = torch.cat([zeros[i] for i in range(0, 12, 4)]).float().mean()
    fake = torch.cat([zeros[i] for i in range(1, 12, 4)] + [zeros[i] for i in range(3, 12, 4)]).float().mean()
    assert abs(real - fake) / real < 0.3
    assert run.config.augment_options == {"cutout_ratio": 0.5, "policy": "cutout", "translation_ratio": 0.125}


def test_gradients_reach_the_generator_through_the_augmentation():
    G = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))
    D = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    judge = Discriminate(lambda x: (D(x).squeeze(1), x.flatten(1)),
                         augment=lambda x: da.diffaugment().apply(x, {}, torch.Generator().manual_seed(0)))
    judge.module = None
    loss = judge(G(torch.randn(16, 4))).logits.mean()
    loss.backward()
    assert G[0].weight.grad is not None and G[0].weight.grad.abs().sum() > 0


def test_ada_at_p_zero_trains_bit_identically_to_no_augmentation(tmp_path):
    plain = ganzoo.train(out=tmp_path / "plain", progress=False, variant="r1", **SMALL)
    fixed = ganzoo.train(out=tmp_path / "ada", progress=False, variant="r1", augment="ada",
                         augment_options={"speed": 0}, **SMALL)
    assert (fixed.read_log()["augment_p"] == 0).all()
    assert_same_checkpoints(plain, fixed)
    for part in ("opt_g", "opt_d"):
        assert_same_tree(saved(plain, part), saved(fixed, part), part)
    # with p moving, the runs part
    moving = ganzoo.train(out=tmp_path / "moving", progress=False, variant="r1", augment="ada",
                          augment_options={"speed": 100, "interval": 1}, **SMALL)
    assert moving.read_log()["augment_p"].iloc[-1] > 0
    a, b = (torch.load(r.checkpoint, weights_only=True)["discriminator"] for r in (moving, plain))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_ada_resumes_bit_identically_with_its_p_r_t_and_generator(tmp_path, monkeypatch):
    straight, resumed = killed_and_resumed(tmp_path, monkeypatch, variant="vanilla", augment="ada",
                                           augment_options={"speed": 200, "interval": 1}, steps=6,
                                           checkpoint_every=3, batch_size=16)
    assert resumed.stats["steps_this_session"] == 3
    assert_same_checkpoints(straight, resumed)
    assert_same_tree(saved(straight, "augmentation"), saved(resumed, "augmentation"), "augmentation")
    log = straight.read_log()
    assert {"augment_p", "augment_r_t"} <= set(log.columns) and log["augment_p"].iloc[-1] > 0
    # the final stats keep where p ended, and the checkpoint holds it
    assert straight.stats["final"]["augment_p"] == pytest.approx(log["augment_p"].iloc[-1], abs=1e-6)
    state = saved(straight, "augmentation")["state"]
    assert state["p"].item() == pytest.approx(log["augment_p"].iloc[-1], abs=1e-6)


def test_runs_without_augmentation_or_subset_keep_their_keys():
    assert resolve(TrainConfig()).key() == "eaf969a0ecb0"
    assert TrainConfig(augment="none").key() == TrainConfig().key()
    assert TrainConfig(train_subset=400).key() != TrainConfig().key()
    assert resolve(TrainConfig(augment="ada")).key() != resolve(TrainConfig(augment="diffaugment")).key()
    # options are typed and filled in: equal settings, one run
    assert resolve(TrainConfig(augment="ada", augment_options={"target": "0.6"})).key() == \
        resolve(TrainConfig(augment="ada")).key()


def test_stratified_subset_keeps_class_shares_and_is_the_same_for_every_seed():
    data = load_split("mnist5k", "train")
    subset, record = training_subset(data, 400, "mnist5k", 64)
    counts = torch.bincount(subset.labels, minlength=10)
    expected = torch.bincount(data.labels, minlength=10).double() * 400 / len(data.labels)
    assert counts.sum() == 400 and (counts.double() - expected).abs().max() < 1
    again, record2 = training_subset(data, 400, "mnist5k", 64)
    assert torch.equal(again.images, subset.images) and record == record2
    assert record["rule"] == "stratified by class" and record["of"] == len(data.labels)
    # unlabelled data: a plain random subset
    unlabelled = ImageData(torch.arange(100, dtype=torch.float32).reshape(100, 1), None)
    plain, record = training_subset(unlabelled, 30, "points")
    assert record["rule"] == "random" and len(set(plain.images.flatten().tolist())) == 30


def test_train_subset_trains_on_that_many_images(tmp_path, cli):
    code, out, err = cli("train", "--steps", "2", "--batch-size", "16", "--train-subset", "100", "--quiet",
                         "--out", tmp_path / "run")
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    dataset = config["resolved"]["dataset"]
    assert dataset["train_images"] == 100 and dataset["info"]["train_subset"]["size"] == 100
    assert "train_subset=100" in out
    assert "overfitting: mean D on 96 training images" in out  # min(100, 1000) in whole batches of 16


@pytest.mark.parametrize("argv,message", [
    (["--augment", "diffaugment", "--augment-option", "policy=color,zoom"],
     "augmentation 'diffaugment' got unknown policy 'zoom'; policies: color, translation, cutout"),
    (["--augment", "ada", "--augment-option", "pipeline=xflip,shear"], "augmentation 'ada' got unknown transform 'shear'"),
    (["--augment", "apa"], "unknown augmentation 'apa'; available: ada (ganzoo), diffaugment (ganzoo)"),
    (["--augment", "ada", "--augment-option", "target=lots"], "augmentation 'ada' option target must be a number"),
    (["--augment", "ada", "--augment-option", "p=2"], "augmentation 'ada' option p must be in [0, 1]"),
    (["--augment-option", "policy=color"], "augment options (policy) given without an augmentation"),
    (["--train-subset", "5000"], "train-subset 5000 is larger than the 4000 training images of 'mnist5k'"),
    (["--train-subset", "40"], "train-subset 40 is smaller than a batch (64 images a step)"),
    (["--train-subset", "-1"], "train-subset must be a non-negative integer"),
    (["--augment", "ada", "--dataset", "ring", "--arch", "pacgan-mlp"],
     "augmentation 'ada' transforms images, but dataset 'ring' has 2-dimensional vectors"),
])
def test_bad_small_data_input_is_one_line_exit_2(tmp_path, cli, argv, message):
    code, _, err = cli("train", "--steps", "1", "--quiet", "--out", tmp_path / "run", *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err, err


def test_digit_unsafe_transforms_on_digits_are_warned_not_refused(tmp_path, cli):
    code, _, err = cli("train", "--steps", "1", "--batch-size", "16", "--quiet", "--out", tmp_path / "run",
                       "--augment", "ada", "--augment-option", "pipeline=xflip,rotate90,xint")
    assert code == 0, err
    assert "warning: augmentation 'ada' applies xflip, rotate90, which can change what an image of 'mnist5k' is" in err
    code, _, err = cli("train", "--steps", "1", "--batch-size", "16", "--quiet", "--out", tmp_path / "safe",
                       "--augment", "ada")
    assert code == 0 and "warning" not in err, err


def test_overfitting_signal_against_a_hand_computation():
    class MeanPixel(nn.Module):  # D(x) = 4 * mean pixel
        def forward(self, x):
            return 4 * x.flatten(1).mean(1), x.flatten(1)

    from ganzoo_plugins.vanilla import ganzoo_variants

    variant = ganzoo_variants()[0]
    train = torch.full((300, 1, 4, 4), 255, dtype=torch.uint8)  # +1 after scaling: D = 4, sigmoid(4)
    held_out = torch.full((100, 1, 4, 4), 0, dtype=torch.uint8)  # -1: D = -4
    signal = overfitting_signal(Discriminate(MeanPixel()), variant, train, held_out, batch=16, seed=0)
    assert signal["images"] == 96  # min(300, 100) rounded down to whole batches
    assert signal["d_train"] == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())
    assert signal["d_heldout"] == pytest.approx(torch.sigmoid(torch.tensor(-4.0)).item())
    assert signal["d_gap"] == pytest.approx(signal["d_train"] - signal["d_heldout"])
    assert overfitting_signal(Discriminate(MeanPixel()), variant, train, held_out[:10], batch=16, seed=0) is None


def test_a_run_records_its_overfitting_signal(tmp_path):
    run = ganzoo.train(out=tmp_path / "run", progress=False, steps=2, batch_size=16)
    signal = run.stats["overfitting"]
    assert signal["images"] == 992 and signal["d_gap"] == pytest.approx(signal["d_train"] - signal["d_heldout"])


def test_bench_setups_axis_takes_augmentation_and_subset():
    from ganzoo.bench import BenchSpec
    from ganzoo.cli import parse_setups

    setups = parse_setups(["ada:augment=ada,augment_options.target=0.7,train_subset=400", "none:train_subset=400"])
    assert setups == {"ada": {"augment": "ada", "augment_options": {"target": 0.7}, "train_subset": 400},
                      "none": {"train_subset": 400}}
    spec = BenchSpec(variants=("vanilla",), seeds=(0,), setups=setups)
    config = spec.train_config("vanilla", "mlp", "mnist5k", 0, setup="ada")
    assert config.augment == "ada" and config.augment_options["target"] == 0.7 and config.train_subset == 400
    assert "augment=ada, augment.target=0.7, train_subset=400" in ganzoo.config.describe_training(config)


def test_augmentations_are_listed_with_their_options(cli):
    code, out, _ = cli("list")
    assert code == 0
    assert "augmentations:" in out and "diffaugment" in out and "option target=0.6" in out


def test_a_third_party_augmentation_plugs_in(tmp_path, register_plugin):
    """A plugin's augmentation (APA, say) is found by name and applied like the built-ins."""
    from ganzoo.specs import AugmentationSpec

    calls = []

    def flip_sign(x, state, rng):
        calls.append(x.shape[0])
        return torch.where(torch.rand(x.shape[0], 1, 1, 1, generator=rng, device=x.device) < 0.5, x, -x)

    class Plugin:
        @hookimpl
        def ganzoo_augmentations(self):
            return [AugmentationSpec(name="negate", description="negate half the images", apply=flip_sign)]

    register_plugin(Plugin(), "negate")
    ganzoo.train(out=tmp_path / "run", progress=False, steps=2, batch_size=16, augment="negate")
    assert calls and all(n == 16 for n in calls)
    assert isinstance(augment.configured("negate"), AugmentationSpec)
