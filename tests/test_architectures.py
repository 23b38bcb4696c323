"""Architectures: dcgan at every size it lists, resnet (SNGAN), their options, spectral normalisation, and
training on real layouts (a 64x64 image folder, the synthetic cifar10 files) through `ganzoo train` on CPU."""
import json

import numpy as np
import pytest
import torch
from torch import nn

import ganzoo
from ganzoo import registry
from ganzoo.config import TrainConfig
from ganzoo.data import load_split
from ganzoo.errors import GanzooError
from ganzoo.specs import ImageShape
from ganzoo.training import resolve
from test_datasets import write_cifar, write_png

DCGAN_SIZES = (16, 28, 32, 64, 128)
RESNET_SIZES = (32, 64)


@pytest.fixture(autouse=True)
def _fresh_data_cache():
    load_split.cache_clear()  # tmp roots differ per test; keep the process cache from growing across them
    yield
    load_split.cache_clear()


def forward_backward(arch: str, size: int, channels: int, options: dict) -> None:
    spec = registry.architecture(arch, options)
    shape = ImageShape(channels, size)
    torch.manual_seed(0)
    G, D = spec.build_generator(16, shape), spec.build_discriminator(shape)
    images = G(torch.randn(3, 16))
    assert images.shape == (3, channels, size, size) and images.abs().max() <= 1
    logits, features = D(images)
    assert logits.shape == (3,) and features.ndim == 2 and features.shape[0] == 3
    (logits.mean() + features.pow(2).mean()).backward()
    for net in (G, D):
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"{name} got no gradient"


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", DCGAN_SIZES)
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_dcgan_builds_and_backpropagates_at_every_size(size, channels, spectral_norm):
    forward_backward("dcgan", size, channels, {"width": 8, "spectral_norm": spectral_norm})


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", RESNET_SIZES)
def test_resnet_builds_and_backpropagates_at_every_size(size, channels):
    forward_backward("resnet", size, channels, {"width": 8})


def test_listed_sizes():
    assert registry.architecture("dcgan").image_sizes == DCGAN_SIZES
    assert registry.architecture("resnet").image_sizes == RESNET_SIZES


def test_dcgan_one_stride_two_layer_per_doubling_above_8x8():
    spec = registry.architecture("dcgan", {"width": 4})
    for size, layers in ((16, 1), (28, 2), (32, 2), (64, 3), (128, 4)):
        shape = ImageShape(3, size)
        G, D = spec.build_generator(8, shape), spec.build_discriminator(shape)
        strided = [m for m in D.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
        assert len(strided) == layers
        assert sum(isinstance(m, nn.ConvTranspose2d) for m in G.modules()) == layers
        # BatchNorm after every hidden layer but D's input layer
        assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == layers - 1


# The 32x32 RGB pair as it was before other sizes existed: checkpoints of earlier runs must load into it.
DCGAN_32_STATE = {
    "generator": {"project.0.weight": (8192, 100), "project.1.weight": (8192,), "project.1.bias": (8192,),
                  "project.1.running_mean": (8192,), "project.1.running_var": (8192,),
                  "project.1.num_batches_tracked": (), "upsample.0.weight": (128, 64, 4, 4),
                  "upsample.1.weight": (64,), "upsample.1.bias": (64,), "upsample.1.running_mean": (64,),
                  "upsample.1.running_var": (64,), "upsample.1.num_batches_tracked": (),
                  "upsample.3.weight": (64, 3, 4, 4), "upsample.3.bias": (3,)},
    "discriminator": {"body.0.weight": (64, 3, 4, 4), "body.0.bias": (64,), "body.2.weight": (128, 64, 4, 4),
                      "body.3.weight": (128,), "body.3.bias": (128,), "body.3.running_mean": (128,),
                      "body.3.running_var": (128,), "body.3.num_batches_tracked": (),
                      "head.weight": (1, 8192), "head.bias": (1,)},
}


def test_default_dcgan_at_32_keeps_its_modules():
    spec = registry.architecture("dcgan")
    shape = ImageShape(3, 32)
    for part, net in (("generator", spec.build_generator(100, shape)), ("discriminator", spec.build_discriminator(shape))):
        assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == DCGAN_32_STATE[part]


def test_options_are_part_of_the_identity_and_default_dcgan_keeps_its_key():
    default = resolve(TrainConfig(arch="dcgan"))
    # dcgan's options came after dcgan runs existed: at their defaults they stay out of the identity
    assert default.arch_options == {} and "arch_options" not in default.identity()
    assert resolve(TrainConfig(arch="dcgan", arch_options={"width": "64", "spectral_norm": "false"})).key() \
        == default.key()
    wide = resolve(TrainConfig(arch="dcgan", arch_options={"width": "128"}))
    sn = resolve(TrainConfig(arch="dcgan", arch_options={"spectral_norm": True}))
    assert wide.arch_options == {"width": 128} and sn.arch_options == {"spectral_norm": True}
    assert len({default.key(), wide.key(), sn.key()}) == 3
    assert wide.key() == resolve(TrainConfig(arch="dcgan", arch_options={"width": 128})).key()
    # resnet is new: its resolved config names every option
    res = resolve(TrainConfig(arch="resnet", dataset="cifar10"))
    assert res.arch_options == {"spectral_norm": True, "width": 128}
    assert resolve(TrainConfig(arch="resnet", dataset="cifar10", arch_options={"width": 64})).key() != res.key()
    assert resolve(TrainConfig(arch="resnet", dataset="cifar10",
                               arch_options={"spectral_norm": "false"})).key() != res.key()


def spectral_norms(D: nn.Module) -> dict[str, tuple[float, float]]:
    """Largest singular value of each weight as D uses it and of the unnormalised parameter behind it."""
    out = {}
    for name, m in D.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            original = m.parametrizations.weight.original
            out[name] = tuple(torch.linalg.matrix_norm(w.detach().flatten(1), ord=2).item()
                              for w in (m.weight, original))
    return out


@pytest.mark.parametrize("arch,options", [("dcgan", {"spectral_norm": "true", "width": "16"}),
                                          ("resnet", {"width": "16"})])
def test_spectral_norm_keeps_each_discriminator_weight_at_norm_one(tmp_path, arch, options):
    write_cifar(tmp_path / "data", per_batch=8)
    run = ganzoo.train(arch=arch, dataset="cifar10", arch_options=options, data_root=str(tmp_path / "data"),
                       steps=10, batch_size=8, out=tmp_path / "r", progress=False)
    spec = registry.architecture(arch, options)
    D = spec.build_discriminator(ImageShape(3, 32))
    D.load_state_dict(torch.load(run.path / "checkpoint.pt", weights_only=True)["discriminator"])
    D.eval()  # no further power iteration: the weights as the last training step left them
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    norms = spectral_norms(D)
    assert len(norms) >= 3
    for name, (used, original) in norms.items():
        assert abs(used - 1) < 0.05, (name, used)
    # the parameters themselves are not at norm 1: the normalisation does the work
    assert any(abs(original - 1) > 0.2 for _, original in norms.values())


def test_without_spectral_norm_weights_are_plain():
    D = registry.architecture("resnet", {"spectral_norm": False, "width": 8}).build_discriminator(ImageShape(3, 32))
    assert not any(hasattr(m, "parametrizations") for m in D.modules())


def test_options_from_the_command_line(tmp_path, cli):
    out = tmp_path / "r"
    code, stdout, err = cli("train", "--arch", "dcgan", "--arch-option", "width=128", "--arch-option",
                            "spectral_norm=true", "--steps", "1", "--batch-size", "8", "--out", out, "--quiet")
    assert code == 0, err
    stored = json.loads((out / "config.json").read_text())
    assert stored["config"]["arch_options"] == {"spectral_norm": True, "width": 128}
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["generator"]["upsample.3.weight"].shape == (128, 1, 4, 4)  # mnist5k: 28x28, one channel
    assert "body.0.parametrizations.weight.original" in state["discriminator"]


@pytest.mark.parametrize("argv,message", [
    (["--arch", "dcgan", "--arch-option", "width=0"], "architecture option width must be a positive integer, got 0"),
    (["--arch", "dcgan", "--arch-option", "width=wide"], "architecture 'dcgan' option width must be an integer"),
    (["--arch", "dcgan", "--arch-option", "spectral_norm=maybe"], "option spectral_norm must be true or false"),
    (["--arch", "dcgan", "--arch-option", "depth=3"], "architecture 'dcgan' has no option depth; its options: "
                                                      "width (default 64), spectral_norm (default False)"),
    (["--arch", "resnet", "--dataset", "cifar10", "--arch-option", "width=3"],
     "architecture option width must be a positive even integer, got 3"),
    (["--arch", "resnet"], "architecture 'resnet' supports image sizes (32, 64), but dataset 'mnist5k' has 28x28"),
])
def test_bad_options_and_sizes_are_one_line(tmp_path, cli, argv, message):
    out = tmp_path / "r"
    code, stdout, err = cli("train", *argv, "--steps", "1", "--out", out, "--quiet")
    assert code == 2 and err.startswith("ganzoo: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not out.exists()


def test_size_dcgan_cannot_do_is_refused(tmp_path, cli):
    for i in range(10):
        write_png(tmp_path / "images" / f"{i}.png", (48, 48), (i * 20, 0, 0))
    code, _, err = cli("train", "--arch", "dcgan", "--dataset", "imagefolder", "--dataset-option",
                       f"folder={tmp_path / 'images'}", "--dataset-option", "size=48", "--steps", "1",
                       "--out", tmp_path / "r", "--quiet")
    assert code == 2 and err.count("\n") == 1
    assert "architecture 'dcgan' supports image sizes (16, 28, 32, 64, 128), but dataset 'imagefolder' has 48x48" in err


def test_64x64_image_folder_trains_with_dcgan(tmp_path, cli):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    out = tmp_path / "r"
    code, stdout, err = cli("train", "--arch", "dcgan", "--dataset", "imagefolder", "--dataset-option",
                            f"folder={folder}", "--arch-option", "width=16", "--steps", "3", "--batch-size", "8",
                            "--out", out, "--quiet")
    assert code == 0, err
    assert "completed" in stdout and (out / "samples.png").is_file()
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    assert resolved["dataset"]["shape"] == {"channels": 3, "size": 64}
    run = ganzoo.open_run(out)
    assert run.step == 3 and np.isfinite(run.read_log()[["d_loss", "g_loss"]].to_numpy()).all()
    G = registry.architecture("dcgan", run.config.arch_options).build_generator(100, ImageShape(3, 64))
    G.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["generator"])
    assert G.eval()(torch.randn(2, 100)).shape == (2, 3, 64, 64)


def test_cifar10_trains_with_resnet(tmp_path, cli):
    write_cifar(tmp_path / "data", per_batch=8)
    out = tmp_path / "r"
    code, stdout, err = cli("train", "--arch", "resnet", "--dataset", "cifar10", "--data-root", tmp_path / "data",
                            "--arch-option", "width=16", "--steps", "3", "--batch-size", "8", "--out", out,
                            "--quiet")
    assert code == 0, err
    assert "completed" in stdout and (out / "samples.png").is_file()
    run = ganzoo.open_run(out)
    assert run.step == 3 and run.config.arch_options == {"spectral_norm": True, "width": 16}
    assert np.isfinite(run.read_log()[["d_loss", "g_loss"]].to_numpy()).all()


def test_configure_refuses_bad_values_directly():
    from ganzoo_plugins.dcgan import dcgan
    from ganzoo_plugins.resnet import resnet

    with pytest.raises(GanzooError, match="positive integer"):
        dcgan(width=-1)
    with pytest.raises(GanzooError, match="positive even integer"):
        resnet(width=0)


def test_a_default_dcgan_run_is_the_same_run_with_its_options_spelt_out(tmp_path):
    write_cifar(tmp_path / "data", per_batch=8)
    common = dict(arch="dcgan", dataset="cifar10", data_root=str(tmp_path / "data"), steps=2, batch_size=8,
                  out=tmp_path / "r", progress=False)
    first = ganzoo.train(**common)
    assert json.loads((first.path / "config.json").read_text())["config"]["arch_options"] == {}
    again = ganzoo.train(**common, arch_options={"width": 64, "spectral_norm": False})
    assert again.stats["wall_time_s"] == first.stats["wall_time_s"]  # found, not trained again
    with pytest.raises(GanzooError, match="already holds a different run"):
        ganzoo.train(**common, arch_options={"width": 32})


def test_resnet_resumes_bit_identically(tmp_path, monkeypatch):
    """Spectral norm's power-iteration vectors are buffers: a resumed run must pick them up exactly."""
    from ganzoo import checkpoint

    write_cifar(tmp_path / "data", per_batch=8)
    common = dict(arch="resnet", dataset="cifar10", data_root=str(tmp_path / "data"), arch_options={"width": 8},
                  steps=4, checkpoint_every=2, batch_size=8, progress=False)
    straight = ganzoo.train(**common, out=tmp_path / "straight")
    real_save = checkpoint.save

    def save_then_crash(path, payload):
        real_save(path, payload)
        raise KeyboardInterrupt  # killed right after the checkpoint at step 2

    monkeypatch.setattr(checkpoint, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        ganzoo.train(**common, out=tmp_path / "resumed")
    monkeypatch.setattr(checkpoint, "save", real_save)
    resumed = ganzoo.train(**common, out=tmp_path / "resumed")
    assert resumed.stats["steps_this_session"] == 2
    a, b = (torch.load(r.path / "checkpoint.pt", weights_only=True) for r in (straight, resumed))
    assert any("_u" in key for key in a["discriminator"])
    for part in ("generator", "discriminator"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"
