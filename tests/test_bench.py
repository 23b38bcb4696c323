"""`ganzoo bench` end to end on CPU: resume after SIGKILL, failing variants, presets, bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_bench_config

import ganzoo
from ganzoo.bench import BenchSpec
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import VariantSpec
from ganzoo_plugins.vanilla import bce_discriminator_loss

ROOT = Path(__file__).resolve().parent.parent
METRICS = ["fid", "fid_sd", "is", "kid", "best_fid", "last_fid", "classes", "class_kl", "completed", "steps"]


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    return write_bench_config(tmp_path_factory.mktemp("cfg") / "tiny.toml",
                              variants=["vanilla", "lsgan"], seeds=[0],
                              steps=120, eval_every=60, n_fake=500, checkpoint_every=20)


@pytest.fixture(scope="module")
def uninterrupted(tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "straight"
    board = ganzoo.bench(config=tiny_config, out=out, progress=False)
    return out, board


def test_bench_writes_a_complete_report(uninterrupted):
    out, board = uninterrupted
    assert board["variant"].tolist()[0] == "real data"
    assert set(board["variant"]) == {"real data", "vanilla", "lsgan", "untrained generator"}
    assert board.attrs["all_completed"]
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.tex", "leaderboard.html", "protocol.json",
                 "curves.png", "losses.png", "samples.png", "results.sqlite"):
        assert (out / name).is_file(), name
    protocol = json.loads((out / "protocol.json").read_text())
    assert protocol["protocol"]["extractor"] == "classifier"
    assert protocol["store"]["format"] == "ganzoo-results"
    assert pd.read_csv(out / "leaderboard.csv", comment="#")["variant"].tolist() == board["variant"].tolist()
    runs = board[board["kind"] == "run"]
    untrained = board[board["kind"] == "untrained"]["fid"].iloc[0]
    assert (runs["fid"] < untrained).all()  # even 120 steps beat the untrained generator
    assert (runs["steps"] == 120).all() and runs["best_fid"].notna().all()


def test_resume_after_sigkill_gives_the_same_table(tiny_config, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ganzoo", "bench", "--config", str(tiny_config), "--out", str(out),
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 240
    # Kill it in the middle of the second run (lsgan), once that run has written a checkpoint.
    while time.time() < deadline and not list(out.glob("runs/lsgan-*/checkpoint.pt")):
        assert proc.poll() is None, "bench finished before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = next(out.glob("runs/lsgan-*"))
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    vanilla_dir = next(out.glob("runs/vanilla-*"))
    vanilla_wall = json.loads((vanilla_dir / "run.json").read_text())["wall_time_s"]

    resumed = ganzoo.bench(config=tiny_config, out=out, progress=False)
    straight = uninterrupted[1]
    pd.testing.assert_frame_equal(resumed[["variant"] + METRICS], straight[["variant"] + METRICS],
                                  check_exact=False, rtol=1e-9)
    # The vanilla cell finished before the kill and was not trained again.
    assert json.loads((vanilla_dir / "run.json").read_text())["wall_time_s"] == vanilla_wall
    log = pd.read_csv(run_dir / "log.csv")
    assert log["step"].tolist() == list(range(1, 121))  # no step lost or repeated across the kill


class RaisingVariant:
    @hookimpl
    def ganzoo_variants(self):
        def g_loss(fake, real=None):
            raise ValueError("this plugin has a bug")

        def nan_loss(fake, real=None):
            return fake.logits.mean() * float("nan")

        return [VariantSpec(name="buggy", description="raises", discriminator_loss=bce_discriminator_loss,
                            generator_loss=g_loss),
                VariantSpec(name="nan", description="diverges", discriminator_loss=bce_discriminator_loss,
                            generator_loss=nan_loss)]


def test_failing_and_diverging_variants_do_not_stop_the_grid(tmp_path, register_plugin, cli):
    register_plugin(RaisingVariant(), "raising")
    code, out, err = cli("bench", "--variants", "buggy,vanilla,nan", "--seeds", "0", "--steps", "30",
                         "--eval-every", "0", "--n-fake", "300", "--out", tmp_path / "b", "--quiet")
    assert code == 1 and "some runs failed or diverged" in err
    board = ganzoo.leaderboard(tmp_path / "b").set_index("variant")
    assert board.loc["buggy", "status"] == "1 failed"
    assert "ValueError: this plugin has a bug" in board.loc["buggy", "error"]
    assert board.loc["nan", "status"] == "1 diverged" and "diverged at step 1" in board.loc["nan", "error"]
    assert board.loc["vanilla", "status"] == "1 ok" and board.loc["vanilla", "fid"] > 0
    assert any(line.startswith("buggy ") and "1 failed" in line for line in out.splitlines())  # the compact table


def test_default_spec_is_the_cpu_preset():
    preset = BenchSpec.from_toml(ROOT / "benchmarks" / "cpu.toml")
    assert preset.protocol_settings() == BenchSpec().protocol_settings()
    assert preset.to_dict() == BenchSpec().to_dict() | {"train": preset.train}
    paper = BenchSpec.from_toml(ROOT / "benchmarks" / "paper.toml")
    assert paper.archs == ("dcgan",) and len(paper.seeds) == 5 and paper.steps == 18750


def test_bench_bad_input(tmp_path, cli, tiny_config, uninterrupted):
    code, _, err = cli("bench", "--variants", "wgan-xx", "--out", tmp_path / "x", "--quiet")
    assert code == 2 and "unknown variant 'wgan-xx'" in err
    assert not (tmp_path / "x" / "results.sqlite").exists()
    code, _, err = cli("bench", "--config", tmp_path / "missing.toml", "--out", tmp_path / "x")
    assert code == 2 and "benchmark config not found" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[bench]\nsteps = 'many'\n")
    code, _, err = cli("bench", "--config", bad, "--out", tmp_path / "x")
    assert code == 2 and "steps must be a positive integer" in err
    bad.write_text("[bench\n")
    code, _, err = cli("bench", "--config", bad, "--out", tmp_path / "x")
    assert code == 2 and "is not valid TOML" in err
    # A report folder belongs to one protocol: other settings there are refused, results kept.
    out = uninterrupted[0]
    before = (out / "results.sqlite").read_bytes()
    code, _, err = cli("bench", "--config", tiny_config, "--n-fake", "600", "--out", out, "--quiet")
    assert code == 2 and "holds results of a benchmark with other settings (n_fake: 500 -> 600)" in err
    assert (out / "results.sqlite").read_bytes() == before


def test_a_benchmark_stopped_before_its_first_record_leaves_no_folder(tmp_path, cli):
    """A missing dataset surfaces in the first job (the real-data row): one line, exit 2, and no empty results
    store left behind tying the folder to this protocol, so the corrected command may use other settings."""
    out = tmp_path / "b"
    code, _, err = cli("bench", "--datasets", "mnist", "--data-root", tmp_path / "nowhere", "--variants", "vanilla",
                       "--seeds", "0", "--steps", "5", "--out", out, "--quiet")
    assert code == 2 and "expected the 4 idx files" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    existing = tmp_path / "kept"
    existing.mkdir()
    code, _, _ = cli("bench", "--datasets", "mnist", "--data-root", tmp_path / "nowhere", "--variants", "vanilla",
                     "--seeds", "0", "--steps", "5", "--out", existing, "--quiet")
    assert code == 2 and existing.is_dir()  # a folder the user made is never removed


def test_rows_carry_every_option_keyed_by_plugin(tmp_path):
    """Architecture options at their defaults are shown like variant options, each under its plugin's name."""
    from ganzoo.bench import _cell_row

    spec = BenchSpec(variants=("wgan-gp", "dragan"), archs=("dcgan",), seeds=(0,))
    gp = _cell_row(spec.train_config("wgan-gp", "dcgan", "mnist5k", 0))
    dragan = _cell_row(spec.train_config("dragan", "dcgan", "mnist5k", 0))
    assert gp["option.variant.wgan-gp.lambda"] == 10.0 and "option.variant.dragan.lambda" not in gp
    assert dragan["option.variant.dragan.lambda"] == 10.0 and dragan["option.variant.dragan.scale"] == 0.5
    assert gp["option.arch.dcgan.width"] == 64 and gp["option.arch.dcgan.spectral_norm"] is False
    assert not any(k.startswith("option.") and k.count(".") < 3 for k in gp)  # no bare option.lambda


def test_bench_takes_architecture_options_from_the_command_line(tmp_path, cli, monkeypatch):
    import sys

    seen = {}

    def fake_bench(spec, **kwargs):
        seen["spec"] = spec
        raise ganzoo.GanzooError("stopped before training")

    monkeypatch.setattr(sys.modules["ganzoo.bench"], "bench", fake_bench)  # ganzoo.bench is the function
    code, _, err = cli("bench", "--archs", "mlp,dcgan", "--arch-option", "dcgan.width=32",
                       "--arch-option", "dcgan.spectral_norm=true", "--out", tmp_path / "b", "--quiet")
    assert code == 2 and "stopped before training" in err
    spec = seen["spec"]
    assert spec.arch_options == {"dcgan": {"width": "32", "spectral_norm": "true"}}
    assert spec.train_config("vanilla", "dcgan", "mnist5k", 0).arch_options == {"width": 32, "spectral_norm": True}
    assert spec.train_config("vanilla", "mlp", "mnist5k", 0).arch_options == {}


@pytest.mark.parametrize("argv, message", [
    (["--arch-option", "width=32"], "--arch-option expects ARCH.KEY=VALUE, got 'width=32'"),
    (["--arch-option", "dcgan.width=32"], "arch_options for dcgan, which is not one of the benchmark's "
                                          "architectures (mlp)"),
    (["--archs", "dcgan", "--arch-option", "dcgan.widht=32"], "architecture 'dcgan' has no option widht"),
])
def test_bad_architecture_options_on_bench_are_one_line(tmp_path, cli, argv, message):
    code, _, err = cli("bench", *argv, "--variants", "vanilla", "--seeds", "0", "--out", tmp_path / "b", "--quiet")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "b").exists()
