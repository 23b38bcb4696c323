"""Metrics as plugins: the hook, third-party metrics installed like any package, what a dataset defaults to, a
metric that does not apply or that fails, protocols that keep compare honest; and a variant with state (LeCam)."""
import json
import math

import pandas as pd
import pytest
import torch

import ganzoo
from ganzoo import checkpoint, registry
from ganzoo.data import load_split
from ganzoo.evaluation import Scorer, default_metrics, evaluate_images
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import MetricColumn, MetricResult, MetricSpec
from conftest import assert_same_checkpoints, killed_and_resumed, run_ganzoo

density_coverage = pytest.importorskip("ganzoo_density_coverage",
                                       reason="tox installs tests/third_party/ganzoo-density-coverage")
lecam_plugin = pytest.importorskip("ganzoo_lecam", reason="tox installs tests/third_party/ganzoo-lecam")

RING = dict(dataset="ring", arch="pacgan-mlp", latent_dim=2, batch_size=20, dataset_options={"train_size": 2000})


def test_builtin_and_third_party_metrics_register_alike():
    metrics = registry.entries("metric")
    assert {"fidelity", "class-coverage", "mixture-modes", "stacked-modes"} <= set(metrics)
    assert metrics["fidelity"].origin.startswith("ganzoo ")  # built in, through an entry point like anyone's
    assert metrics["density-coverage"].origin.startswith("ganzoo-density-coverage ")
    done = run_ganzoo("list")
    assert done.returncode == 0 and "density-coverage" in done.stdout and "[ganzoo-density-coverage 0.1.0]" in done.stdout
    assert "columns: coverage (higher is better), density" in done.stdout


def test_datasets_declare_their_default_metrics():
    assert default_metrics(registry.dataset("mnist5k")) == ("fidelity", "class-coverage")
    assert default_metrics(registry.dataset("ring")) == ("mixture-modes",)
    assert default_metrics(registry.dataset("stacked-mnist")) == ("stacked-modes",)


def test_density_and_coverage_against_a_hand_computation():
    real = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    # k = 1: each real point's radius is the distance to its nearest other real point: 1, 1, 1, 8
    fake = torch.tensor([[0.5], [0.6], [9.0], [20.0]])
    got = density_coverage.density_coverage(real, fake, k=1)
    # 0.5 is inside the balls of 0 and 1 (distances 0.5 < 1), 0.6 likewise, 9 inside 10's (1 < 8), 20 in none
    assert got["density"] == pytest.approx(5 / 4)
    assert got["coverage"] == pytest.approx(3 / 4)  # the balls of 0, 1 and 10 hold a fake; 2's does not


def test_a_third_party_metric_scores_images_and_vectors(reference_classifier):
    test = load_split("mnist5k", "test").images  # sorted by class: every other one is half of each class
    result = evaluate_images(test[::2], "mnist5k", metrics=["fidelity", "density-coverage"], progress=False)
    assert 0.7 < result.metrics["coverage"] <= 1.0 and 0.6 < result.metrics["density"] < 1.6
    assert result.protocol["density_coverage.k"] == 5 and "classifier features" in \
        result.protocol["density_coverage.space"]
    assert "density_coverage.k" in result.comparable
    collapsed = evaluate_images(test[:1].repeat(500, 1, 1, 1), "mnist5k", metrics=["density-coverage"],
                                progress=False)
    assert collapsed.metrics["coverage"] < 0.05  # one digit repeated covers almost none of the real balls
    # as many generated points as real ones (10,000 of the reference, the default): coverage about 1 - e^-5
    ring = evaluate_images(load_split("ring", "train").images[:10_000], "ring", metrics=["density-coverage"],
                           progress=False)
    assert ring.metrics["coverage"] > 0.95 and 0.8 < ring.metrics["density"] < 1.2
    assert ring.protocol["density_coverage.space"] == "the samples themselves"
    assert ring.protocol["density_coverage.real_samples"] == 10_000


class Broken:
    """A metric plugin whose score raises, for the bench."""

    @hookimpl
    def ganzoo_metrics(self):
        def prepare(request):
            def score(given):
                raise ZeroDivisionError("bug in the metric")
            return score

        return [MetricSpec(name="broken", description="always raises", columns=(MetricColumn("broken_value", "b"),),
                           prepare=prepare)]


def test_a_metric_that_raises_fails_its_cells_and_keeps_the_others(tmp_path, register_plugin, cli):
    register_plugin(Broken(), "broken-metric")
    code, out, err = cli("bench", "--variants", "vanilla", "--seeds", "0", "--steps", "3", "--eval-every", "0",
                         "--n-fake", "200", "--metrics", "fidelity,broken", "--out", tmp_path / "b", "--quiet")
    assert code == 1  # some cells did not complete
    frame = ganzoo.leaderboard(tmp_path / "b")
    run = frame[frame["kind"] == "run"].iloc[0]
    assert run["status"] == "1 failed" and "metric 'broken' failed: ZeroDivisionError: bug in the metric" in run["error"]
    assert run["fid"] > 0  # the other metric is still reported
    from ganzoo.leaderboard import per_seed

    stored = per_seed(tmp_path / "b")
    assert (stored["status"] == "failed").sum() == 3  # real, untrained and the run: scored, then marked
    assert (tmp_path / "b" / "leaderboard.md").is_file()  # nothing written is lost
    run_folder = tmp_path / "b" / stored.loc[stored["kind"] == "run", "run"].item()
    code, _, err = cli("eval", "--run", run_folder, "--metrics", "broken", "--n", "50")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "metric 'broken' failed: ZeroDivisionError: bug in the metric (at test_metric_plugins.py:" in err


def test_a_metric_that_does_not_apply_is_refused_before_training(tmp_path, cli):
    code, _, err = cli("bench", "--datasets", "ring", "--archs", "pacgan-mlp", "--metrics", "fidelity",
                       "--out", tmp_path / "b", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "metric 'fidelity' does not apply to dataset 'ring' (2-dimensional vectors)" in err
    assert "metrics that apply:" in err and not (tmp_path / "b").exists()
    code, _, err = cli("bench", "--metrics", "nope", "--out", tmp_path / "c", "--quiet")
    assert code == 2 and "unknown metric 'nope'; available:" in err


def test_a_ring_bench_with_setups_reads_like_the_papers_tables(tmp_path, cli):
    config = tmp_path / "ring.toml"
    config.write_text("""
[bench]
variants = ["vanilla"]
archs = ["pacgan-mlp"]
datasets = ["ring"]
seeds = [0, 1]
steps = 4
eval_every = 0

[train]
latent_dim = 2
batch_size = 20

[dataset_options.ring]
train_size = 2000

[setups.gan]
[setups.pacgan2]
pack = 2
[setups.unrolled]
unroll = 1
""")
    code, out, err = cli("bench", "--config", config, "--out", tmp_path / "b", "--quiet")
    assert code == 0, err
    board = ganzoo.leaderboard(tmp_path / "b")
    runs = board[board["kind"] == "run"]
    assert sorted(runs["setup"]) == ["gan", "pacgan2", "unrolled"] and (runs["seeds"] == 2).all()
    assert {"modes", "high_quality", "reverse_kl"} <= set(board.columns) and "fid" not in board.columns
    assert board.loc[board["kind"] == "real", "modes"].item() == 8
    assert list(runs["reverse_kl"].fillna(math.inf)) == sorted(runs["reverse_kl"].fillna(math.inf))  # ranked
    table = (tmp_path / "b" / "leaderboard.md").read_text()
    assert "| setup" in table and "reverse KL" in table and "% high quality" in table
    folders = {p.name.split("-seed")[0] for p in (tmp_path / "b" / "runs").iterdir()}
    assert folders == {"vanilla-gan-pacgan-mlp-ring", "vanilla-pacgan2-pacgan-mlp-ring",
                       "vanilla-unrolled-pacgan-mlp-ring"}
    assert (tmp_path / "b" / "samples.png").is_file() and (tmp_path / "b" / "report.html").is_file()


def _ring_bench(tmp_path, name: str, threshold: float):
    return ganzoo.bench(variants="vanilla", archs="pacgan-mlp", datasets="ring", seeds=[0, 1], steps=3, eval_every=0,
                        train={"latent_dim": 2, "batch_size": 20}, dataset_options={"ring": {"train_size": 2000}},
                        metric_options={"mixture-modes": {"threshold": threshold}}, out=tmp_path / name,
                        progress=False)


def test_compare_refuses_scores_of_different_metric_protocols(tmp_path, cli):
    _ring_bench(tmp_path, "a", 3.0)
    _ring_bench(tmp_path, "b", 2.0)
    code, _, err = cli("compare", tmp_path / "a", tmp_path / "b")
    assert code == 2 and "mixture_modes.threshold_std: 3.0 vs 2.0" in err
    code, out, _ = cli("compare", tmp_path / "a", tmp_path / "a")
    assert code == 0 and "reverse KL A" in out and "reverse KL p (Holm)" in out


# ---- a variant with state: LeCam, as a third-party plugin ---------------------------------------------------------

def test_lecam_state_is_checkpointed_and_resumes_bit_identically(tmp_path, monkeypatch):
    straight, resumed = killed_and_resumed(tmp_path, monkeypatch, variant="lecam", steps=6, checkpoint_every=3,
                                           batch_size=16)
    saved = torch.load(straight.checkpoint, weights_only=True)["variant_state"]
    assert set(saved) == {"ema_real", "ema_fake"} and float(saved["ema_real"]) != 0.0
    assert resumed.stats["steps_this_session"] == 3 and "lecam" in resumed.read_log().columns
    assert_same_checkpoints(straight, resumed, parts=("generator", "discriminator", "variant_state"))


def test_lecam_averages_follow_the_hand_computed_update(tmp_path):
    run = ganzoo.train(variant="lecam", steps=1, batch_size=16, progress=False, out=tmp_path / "r")
    state = torch.load(run.checkpoint, weights_only=True)["variant_state"]
    log = run.read_log()
    # after one D step from 0: ema = 0.01 * mean D output of that step; D(x) is logged through the sigmoid
    logit = math.log(log["d_real"].iloc[0] / (1 - log["d_real"].iloc[0]))
    assert abs(float(state["ema_real"])) < 0.05 and abs(float(state["ema_real"]) - 0.01 * logit) < 0.02


def test_state_that_is_not_a_tensor_and_unknown_generator_arguments_are_refused(register_plugin, capsys):
    from ganzoo.specs import VariantSpec
    from ganzoo_plugins.vanilla import bce_discriminator_loss

    class Bad:
        def __init__(self, name, **pieces):
            self.spec = VariantSpec(name=name, description="x", discriminator_loss=bce_discriminator_loss,
                                    **{"generator_loss": lambda fake, real=None: -fake.logits.mean(), **pieces})

        @hookimpl
        def ganzoo_variants(self):
            return [self.spec]

    register_plugin(Bad("bad-g", generator_loss=lambda fake_images, nonsense: fake_images.mean()), "bad-g-plugin")
    register_plugin(Bad("bad-state", state={"average": "zero"}), "bad-state-plugin")
    register_plugin(Bad("two-args", generator_loss=lambda f, r: -f.logits.mean()), "two-args-plugin")
    variants = registry.entries("variant")
    assert "bad-g" not in variants and "bad-state" not in variants
    assert "two-args" in variants  # the first interface, (fake, real) by position, still works
    err = capsys.readouterr().err
    assert "generator_loss asks for nonsense" in err and "state['average'] must be a number or a tensor" in err
