"""TensorBoard logging: what a run writes, each step once after a resume, and a clear error without the package."""
import sys

import pytest

import ganzoo
from ganzoo import checkpoint

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

SETTINGS = dict(variant="wgan-gp", steps=20, checkpoint_every=10, eval_every=5, eval_samples=200, batch_size=16,
                tensorboard=True, progress=False)


def events(run_path):
    accumulator = EventAccumulator(str(run_path / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_resumed_run_shows_every_step_once(tmp_path, monkeypatch):
    real_save = checkpoint.save
    saves = []

    def die_at_second_checkpoint(path, payload):
        saves.append(payload["step"])
        if len(saves) == 2:  # steps 11-20 and their evaluations reached TensorBoard; the checkpoint stays at 10
            raise KeyboardInterrupt
        return real_save(path, payload)

    monkeypatch.setattr(checkpoint, "save", die_at_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        ganzoo.train(out=tmp_path / "r", **SETTINGS)
    monkeypatch.setattr(checkpoint, "save", real_save)
    run = ganzoo.train(out=tmp_path / "r", **SETTINGS)
    assert run.status == "completed" and run.stats["steps_this_session"] == 10

    found = events(run.path)
    log = run.read_log()
    for tag, column in (("loss/discriminator", "d_loss"), ("loss/generator", "g_loss"), ("D/real", "d_real"),
                        ("D/generated", "d_fake"), ("penalty/gradient_penalty", "gradient_penalty")):
        scalars = found.Scalars(tag)
        assert [s.step for s in scalars] == list(range(1, 21)), tag  # each step once, in order
        assert [s.value for s in scalars] == pytest.approx(log[column].tolist(), rel=1e-4), tag
    curve = run.read_eval()
    assert [s.step for s in found.Scalars("eval/fid")] == [5, 10, 15, 20]
    assert [s.value for s in found.Scalars("eval/fid")] == pytest.approx(curve["fid"].tolist(), rel=1e-5)
    assert [s.step for s in found.Scalars("eval/is_mean")] == [5, 10, 15, 20]
    assert [s.step for s in found.Images("samples")] == [5, 10, 15, 20]
    assert found.Scalars("speed/images_per_s")[-1].step == 20


def test_tensorboard_is_operational_not_part_of_the_run(tmp_path):
    with_log = ganzoo.TrainConfig(steps=5, tensorboard=True)
    assert with_log.key() == ganzoo.TrainConfig(steps=5).key()


def test_missing_tensorboard_package_is_one_line(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    code, _, err = cli("train", "--tensorboard", "--steps", "2", "--out", tmp_path / "r", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "pip install 'ganzoo[tensorboard]'" in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
