"""Checkpoints load only as tensors and plain data; damaged or foreign files are named, never executed."""
import os

import pytest
import torch

import ganzoo
from ganzoo import checkpoint
from ganzoo.errors import GanzooError


class CarriesCode:
    def __reduce__(self):
        return (os.system, ("echo this-should-never-run",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return ganzoo.train(steps=5, out=tmp_path_factory.mktemp("ck") / "run", progress=False)


def test_checkpoint_loads_with_weights_only(trained):
    payload = torch.load(trained.checkpoint, weights_only=True)
    assert payload["format"] == "ganzoo-checkpoint" and payload["step"] == 5
    assert checkpoint.load(trained.checkpoint, trained.stats["checkpoint_sha256"])["step"] == 5


def test_pickle_carrying_code_is_refused(tmp_path, capfd):
    path = tmp_path / "evil.pt"
    torch.save({"format": "ganzoo-checkpoint", "payload": CarriesCode()}, path)
    with pytest.raises(GanzooError, match="refusing to load .*contains pickled code"):
        checkpoint.load(path)
    assert "this-should-never-run" not in capfd.readouterr().out


def test_truncated_and_foreign_files(tmp_path, trained):
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(trained.checkpoint.read_bytes()[:4000])
    with pytest.raises(GanzooError, match="truncated or corrupt"):
        checkpoint.load(truncated)
    foreign = tmp_path / "f.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(GanzooError, match="is not a ganzoo checkpoint"):
        checkpoint.load(foreign)
    with pytest.raises(GanzooError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "missing.pt")


def copy_run(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("damage, message", [
    ("delete", "has no checkpoint"),
    ("truncate", "does not match the SHA-256"),
    ("tamper", "does not match the SHA-256"),
    ("code", "does not match the SHA-256"),
])
def test_sample_refuses_damaged_checkpoints(tmp_path, trained, cli, damage, message):
    run = copy_run(trained.path, tmp_path / "copy")
    ck = run / "checkpoint.pt"
    if damage == "delete":
        ck.unlink()
    elif damage == "truncate":
        ck.write_bytes(ck.read_bytes()[:1000])
    elif damage == "tamper":
        payload = torch.load(ck, weights_only=True)
        payload["generator"]["net.0.weight"] += 1
        torch.save(payload, ck)
    else:
        torch.save({"format": "ganzoo-checkpoint", "x": CarriesCode()}, ck)
    code, _, err = cli("sample", "--run", run, "--n", "4", "--out", tmp_path / "s.npz")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.npz").exists()


def test_sample_rejects_weights_that_do_not_fit(tmp_path, trained, cli):
    run = copy_run(trained.path, tmp_path / "copy")
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    payload["generator"]["net.0.weight"] = torch.zeros(3, 3)
    torch.save(payload, run / "checkpoint.pt")
    status = (run / "run.json").read_text().replace(trained.stats["checkpoint_sha256"], "")
    (run / "run.json").write_text(status)
    code, _, err = cli("sample", "--run", run, "--n", "4", "--out", tmp_path / "s.npz")
    assert code == 2 and "weights do not fit the architecture" in err


def test_sample_bad_paths(tmp_path, cli):
    code, _, err = cli("sample", "--run", tmp_path / "nope", "--n", "4", "--out", tmp_path / "s.npz")
    assert code == 2 and "run folder not found" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli("sample", "--run", tmp_path / "empty", "--n", "4", "--out", tmp_path / "s.npz")
    assert code == 2 and "not a ganzoo run folder" in err


def test_resuming_into_a_changed_network_names_the_keys(tmp_path, cli, monkeypatch):
    """A D that gained a buffer since the checkpoint: the error names the key, not torch's first line alone."""
    from conftest import killed_after_checkpoint
    from ganzoo_plugins import mlp

    with killed_after_checkpoint(2), pytest.raises(KeyboardInterrupt):
        ganzoo.train(steps=4, checkpoint_every=2, batch_size=32, out=tmp_path / "run", progress=False)

    class GainedABuffer(mlp.MLPDiscriminator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_buffer("calls", torch.zeros(()))

    monkeypatch.setattr(mlp, "MLPDiscriminator", GainedABuffer)
    code, _, err = cli("train", "--steps", "4", "--checkpoint-every", "2", "--batch-size", "32",
                       "--out", tmp_path / "run", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "the discriminator weights do not fit the architecture (GainedABuffer: missing keys calls)" in err


def test_state_mismatch_names_missing_unexpected_and_reshaped_keys():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    state = {"0.weight": torch.zeros(5, 3), "0.bias": torch.zeros(4), "2.weight": torch.zeros(1, 4)}
    assert checkpoint.state_mismatch(net, state) == (
        "missing keys 1.weight, 1.bias; unexpected keys 2.weight; "
        "other shapes 0.weight (5, 3) in the checkpoint, (4, 3) here")
    assert checkpoint.state_mismatch(net, net.state_dict()) == ""
