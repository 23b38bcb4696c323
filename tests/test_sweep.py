"""Sweeps: reproducible settings, the expected-minimum curve against a direct count, selection kept apart from
the reported scores, resume, plain CSV, comparisons corrected for their number."""
import itertools
import json

import numpy as np
import pandas as pd
import pytest

import ganzoo
from ganzoo.errors import GanzooError
from ganzoo.sweep import SweepSpec, apply_setting, expected_minimum, holm

SPACE = {"lr": {"log_uniform": [1e-5, 1e-2]}, "beta1": {"uniform": [0.0, 1.0]}, "d_steps": [1, 5],
         "r1": {"gamma": {"log_uniform": [0.1, 100.0]}}}


def test_random_search_is_reproducible_and_starts_with_the_recipe():
    sweep = SweepSpec(settings=6, seed=3, space=SPACE)
    first = sweep.settings_for("vanilla")
    assert first[0] == {} and len(first) == 6  # the variant's own recipe is always tried
    assert first == SweepSpec(settings=6, seed=3, space=SPACE).settings_for("vanilla")
    assert first != SweepSpec(settings=6, seed=4, space=SPACE).settings_for("vanilla")
    for setting in first[1:]:
        assert set(setting) == {"lr", "beta1", "d_steps"}
        assert 1e-5 <= setting["lr"] <= 1e-2 and 0 <= setting["beta1"] <= 1 and setting["d_steps"] in (1, 5)
    assert all("gamma" in s for s in sweep.settings_for("r1")[1:])  # its own table on top of the shared one
    # a variant's draws do not depend on which other variants the sweep has
    assert SweepSpec(settings=6, seed=3, space={**SPACE, "wgan": {"clip": [0.01, 0.1]}}).settings_for("vanilla") == first
    grid = SweepSpec(settings=10, method="grid", space={"lr": [1e-4, 2e-4], "d_steps": [1, 5]}).settings_for("x")
    assert grid == [{}, {"lr": 1e-4, "d_steps": 1}, {"lr": 1e-4, "d_steps": 5}, {"lr": 2e-4, "d_steps": 1},
                    {"lr": 2e-4, "d_steps": 5}]


def test_settings_apply_to_the_recipe_and_options():
    config, applied = apply_setting(ganzoo.TrainConfig(variant="wgan-gp"), {"beta1": 0.3, "lambda": 2.0})
    assert config.betas == (0.3, 0.9) and config.variant_options == {"lambda": 2.0} and config.d_steps == 5
    config, applied = apply_setting(ganzoo.TrainConfig(variant="wgan"), {"beta1": 0.3, "lr": 1e-3})
    assert config.optimizer == "rmsprop" and config.betas is None and applied == {"lr": 1e-3}  # no betas to vary


@pytest.mark.parametrize("table, message", [
    ({"settings": 0}, "settings must be a positive integer"),
    ({"method": "bayes"}, "method must be random or grid"),
    ({"space": {"momentum": [0.9]}}, "momentum: not a training setting a sweep varies"),
    ({"space": {"lr": {"log_uniform": [0, 1]}}}, "log_uniform needs a positive low bound"),
    ({"space": {"lr": {"normal": [0, 1]}}}, "expected a list of values or one of"),
    ({"trials": 3}, "[sweep] unknown key(s) trials"),
])
def test_bad_sweeps_are_refused(table, message):
    with pytest.raises(GanzooError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        SweepSpec.from_dict(table)


def test_expected_minimum_matches_a_direct_count():
    """Every way of drawing k settings with replacement, counted: the mean of their minimum."""
    scores = [7.0, 3.0, 5.0, 9.0]
    curve = expected_minimum(scores, bootstrap=20000, seed=1)
    for k, mean, low, high in curve:
        direct = np.mean([min(draw) for draw in itertools.product(scores, repeat=k)])
        assert mean == pytest.approx(direct, rel=1e-12)
        assert low <= mean <= high
        assert low >= min(scores) and high <= max(scores)
    assert [row[1] for row in curve] == sorted((row[1] for row in curve), reverse=True)  # more settings, lower
    assert expected_minimum([4.0])[0][1:] == (4.0, 4.0, 4.0)


def test_holm_correction():
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5])[0] == 0.5


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    config = tmp_path_factory.mktemp("cfg") / "sweep.toml"
    config.write_text("""
[bench]
variants = ["vanilla", "r1"]
seeds = [0, 1]
steps = 30
eval_every = 0
n_fake = 300

[train]
batch_size = 32

[sweep]
settings = 3
seed = 0
selection_seed = 100

[sweep.space]
lr = {log_uniform = [1e-4, 1e-3]}

[sweep.space.r1]
gamma = [1.0, 5.0]
""")
    out = tmp_path_factory.mktemp("bench") / "sweep"
    board = ganzoo.bench(config=config, out=out, progress=False)
    return config, out, board


def test_sweep_reports_the_chosen_setting_on_other_seeds(swept):
    _, out, board = swept
    from ganzoo.leaderboard import per_seed

    frame = per_seed(out)
    search = frame[frame["kind"] == "search"]
    assert len(search) == 2 * 3 and set(search["seed"]) == {100}
    selections = frame[frame["kind"] == "selection"].set_index("variant")
    runs = frame[frame["kind"] == "run"]
    assert set(runs["seed"]) == {0, 1} and len(runs) == 2 * 2  # the report seeds only
    for variant in ("vanilla", "r1"):
        scored = search[search["variant"] == variant].set_index("setting")["fid"]
        assert selections.loc[variant, "setting"] == scored.idxmin()  # the rule: the lowest search FID
        chosen = runs[runs["variant"] == variant]
        assert set(chosen["setting"]) == {scored.idxmin()}
        row = board.set_index("variant").loc[variant]
        assert row["fid"] == pytest.approx(chosen["fid"].mean())  # the selection run is not averaged in
        assert row["fid"] != pytest.approx(scored.min())
        assert "setting" in row["selected_by"] and "search FID" in row["selected_by"]
    table = pd.read_csv(out / "sweep.csv")
    assert list(table["settings"]) == [3, 3]
    for name in ("sweep_expected_min.png", "sweep_fid_settings.png", "report.html"):
        assert (out / name).is_file()
    assert "Sweep</h2>" in (out / "report.html").read_text()


def test_sweep_resumes_without_training_again(swept, tmp_path):
    config, out, board = swept
    walls = {p: json.loads((p / "run.json").read_text())["wall_time_s"] for p in (out / "runs").iterdir()}
    again = ganzoo.bench(config=config, out=out, progress=False)
    assert {p: json.loads((p / "run.json").read_text())["wall_time_s"] for p in (out / "runs").iterdir()} == walls
    pd.testing.assert_frame_equal(again, board)


def test_leaderboard_csv_is_plain_data_with_recipe_columns(swept):
    _, out, board = swept
    csv = pd.read_csv(out / "leaderboard.csv")  # no comment lines to skip
    assert list(csv["variant"]) == list(board["variant"])
    assert {"recipe", "d_steps", "optimizer", "lr", "beta1", "beta2", "setting_desc",
            "option.variant.r1.gamma"} <= set(csv)
    runs = csv[csv["kind"] == "run"]
    assert runs["seeds"].dtype.kind == "i" and runs["completed"].dtype.kind == "i"
    md = (out / "leaderboard.md").read_text()
    assert "| lr " in md or "| lr" in md  # the field that differs between rows is a column


def test_selection_seed_must_not_be_a_report_seed(tmp_path, cli):
    config = tmp_path / "bad.toml"
    config.write_text('[bench]\nvariants = ["vanilla"]\nseeds = [0, 100]\n[sweep]\nsettings = 2\n'
                      '[sweep.space]\nlr = [1e-4]\n')
    code, _, err = cli("bench", "--config", config, "--out", tmp_path / "b", "--quiet")
    assert code == 2 and "selection_seed 100 is also a report seed" in err
    assert not (tmp_path / "b").exists()


def test_a_variant_whose_every_setting_fails_stays_on_the_board(register_plugin, tmp_path, cli):
    """No setting scored, so none is chosen: the variant is still a row of every table, marked with its search's
    outcome and error, and the benchmark's exit status says it is not done."""
    from ganzoo.hookspecs import hookimpl
    from ganzoo.specs import VariantSpec
    from ganzoo_plugins.vanilla import bce_discriminator_loss

    def broken_loss(fake, real=None):
        raise ValueError("this loss is broken")

    class Broken:
        @hookimpl
        def ganzoo_variants(self):
            return [VariantSpec(name="broken", description="fails at its first step",
                                discriminator_loss=bce_discriminator_loss, generator_loss=broken_loss)]

    register_plugin(Broken(), "broken")
    config = tmp_path / "sweep.toml"
    config.write_text('[bench]\nvariants = ["vanilla", "broken"]\nseeds = [0]\nsteps = 5\neval_every = 0\n'
                      'n_fake = 300\n[train]\nbatch_size = 32\n[sweep]\nsettings = 2\n'
                      '[sweep.space]\nlr = [1e-4, 3e-4]\n')
    out = tmp_path / "b"
    code, _, err = cli("bench", "--config", config, "--out", out, "--quiet")
    assert code == 1 and "some runs failed" in err
    board = ganzoo.leaderboard(out)
    row = board.set_index("variant").loc["broken"]
    assert row["status"] == "no setting chosen (search: 2 failed)" and "this loss is broken" in row["error"]
    assert row["completed"] == 0 and row["seeds"] == 1 and not board.attrs["all_completed"]
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.tex", "report.html"):
        assert "broken" in (out / name).read_text(), name


def test_settings_that_train_the_same_run_count_once():
    """WGAN's RMSprop has no betas: a draw that changes beta1 alone trains the recipe again. Such a draw is not
    a new setting; another is drawn, and a space without enough distinct settings gives fewer, never repeats."""
    base = ganzoo.TrainConfig(variant="wgan", seed=100)
    identity = lambda setting: apply_setting(base, setting)[0].key()  # noqa: E731 - as bench passes it
    sweep = SweepSpec(settings=4, seed=0, space={"beta1": {"uniform": [0.0, 1.0]}, "lr": [5e-5, 1e-4, 2e-4, 4e-4]})
    settings = sweep.settings_for("wgan", identity=identity)
    keys = [identity(s) for s in settings]
    assert len(settings) == 4 and len(set(keys)) == 4 and settings[0] == {}
    only_beta1 = SweepSpec(settings=3, space={"beta1": {"uniform": [0.0, 1.0]}})
    assert only_beta1.settings_for("wgan", identity=identity) == [{}]  # nothing else to try under RMSprop
    assert len(only_beta1.settings_for("vanilla")) == 3  # Adam's beta1 is a setting
    grid = SweepSpec(settings=4, method="grid", space={"lr": [5e-5, 1e-4], "beta1": [0.0, 0.5]})
    assert [s.get("lr") for s in grid.settings_for("wgan", identity=identity)] == [None, 1e-4]


def test_sweep_names_that_nothing_reads_are_refused_by_name(tmp_path, cli):
    base = ('[bench]\nvariants = ["vanilla", "lsgan"]\nseeds = [0]\nsteps = 5\n[sweep]\nsettings = 2\n'
            '[sweep.space]\nlr = [1e-4]\n')
    for extra, name in (('[sweep.space.lsgn]\nlr = [2e-4]\n', "lsgn"),
                        ('bta2 = {unifrom = [0.9, 0.99]}\n', "bta2")):
        config = tmp_path / f"{name}.toml"
        config.write_text(base.replace("lr = [1e-4]\n", "lr = [1e-4]\n" + extra) if name == "bta2" else base + extra)
        code, _, err = cli("bench", "--config", config, "--out", tmp_path / name, "--quiet")
        assert code == 2 and f"[sweep.space.{name}]: '{name}' is neither a variant of this benchmark" in err, err
        assert not (tmp_path / name).exists()


def test_a_folder_compares_settings_by_value_not_spelling(tmp_path):
    from ganzoo.store import ResultsStore

    store = ResultsStore.open(tmp_path / "results.sqlite", create=True)
    settings = {"sweep": {"space": {"beta1": [0.0, 0.5]}}, "n_fake": 300, "tensorboard": False}
    store.claim(settings, {}, {})
    store.claim({**settings, "sweep": {"space": {"beta1": [0, 0.5]}}}, {}, {})  # the same values
    with pytest.raises(GanzooError, match=r"other settings \(sweep: .*0\.6"):
        store.claim({**settings, "sweep": {"space": {"beta1": [0, 0.6]}}}, {}, {})
    with pytest.raises(GanzooError, match=r"other settings \(tensorboard: False -> 0\)"):
        store.claim({**settings, "tensorboard": 0}, {}, {})
    store.close()
