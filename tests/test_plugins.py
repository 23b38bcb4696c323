"""Plugins arrive through real entry points: installed distributions, broken ones, clashing ones."""
import textwrap

import pytest

from conftest import run_ganzoo
from ganzoo import registry
from ganzoo.errors import GanzooError
from ganzoo.hookspecs import hookimpl
from ganzoo.specs import VariantSpec


def make_distribution(site, dist: str, module: str, source: str, entry_name: str | None = None):
    """Write an importable module plus the dist-info that importlib.metadata reads, as pip would."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[ganzoo]\n{entry_name or module} = {module}\n")
    return site


VARIANT_SOURCE = """
    from ganzoo.hookspecs import hookimpl
    from ganzoo.specs import VariantSpec
    from ganzoo_plugins.vanilla import bce_discriminator_loss, non_saturating_generator_loss

    @hookimpl
    def ganzoo_variants():
        return [VariantSpec(name={name!r}, description="test variant",
                            discriminator_loss=bce_discriminator_loss,
                            generator_loss=non_saturating_generator_loss)]
"""


def test_builtins_and_third_party_plugin_are_listed_with_their_package(cli):
    code, out, _ = cli("list")
    assert code == 0
    for name in ("vanilla", "minimax", "lsgan", "feature-matching", "mlp", "dcgan", "mnist5k"):
        assert f"\n  {name} " in out
    # The example third-party distribution is pip-installed into the test environment (see tox.ini).
    example_line = next(line for line in out.splitlines() if line.strip().startswith("wgan-lp "))
    assert "[ganzoo-wgan-lp 0.1.0]" in example_line
    assert "Petzka, Fischer & Lukovnicov 2018" in out
    assert "recipe: 5 critic steps, adam lr 0.0001 betas (0, 0.9)" in out
    assert "option lambda=10.0: weight of the Lipschitz penalty" in out


def test_list_json_names_provider(cli):
    import json

    code, out, _ = cli("list", "--json")
    listed = {v["name"]: v for v in json.loads(out)["variant"]}
    assert listed["wgan-lp"]["provided_by"].startswith("ganzoo-wgan-lp")
    assert listed["wgan-gp"]["recipe"] == {"d_steps": 5, "optimizer": "adam", "lr": 1e-4, "betas": [0.0, 0.9]}
    assert listed["r1"]["options"]["gamma"]["default"] == 10.0
    assert listed["vanilla"]["provided_by"].startswith("ganzoo ")
    assert listed["lsgan"]["paper"].startswith("Mao et al. 2017")


def test_plugins_command_shows_versions_and_hooks(cli):
    code, out, _ = cli("plugins")
    assert code == 0
    assert "wgan-lp" in out and "ganzoo-wgan-lp 0.1.0" in out and "ganzoo_variants" in out
    assert "ganzoo_plugins.mlp" in out and "ganzoo_architectures" in out


def test_third_party_variant_trains_with_its_recipe_penalty_and_option(tmp_path, cli):
    import json

    import pandas as pd

    code, out, err = cli("train", "--variant", "wgan-lp", "--steps", "5", "--out", tmp_path / "h", "--quiet",
                         "--variant-option", "lambda=2")
    assert code == 0, err
    assert (tmp_path / "h" / "checkpoint.pt").is_file()
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    assert config["config"]["d_steps"] == 5 and config["config"]["betas"] == [0.0, 0.9]
    assert config["config"]["variant_options"] == {"lambda": 2.0}
    assert config["resolved"]["variant"]["penalties"] == [{"name": "lipschitz_penalty", "weight": 2.0, "every": 1}]
    assert list(pd.read_csv(tmp_path / "h" / "log.csv").columns) == [
        "step", "d_loss", "g_loss", "d_real", "d_fake", "lipschitz_penalty", "time_s"]


def test_plugin_written_for_two_argument_losses_still_trains(tmp_path, register_plugin):
    """A variant of the first interface (two losses, nothing else) keeps training, with the reference recipe."""
    import ganzoo

    class OldStyle:
        @hookimpl
        def ganzoo_variants(self):
            return [VariantSpec(name="old-style", description="two-argument losses only",
                                discriminator_loss=lambda real, fake: (real.logits - 1).pow(2).mean()
                                + fake.logits.pow(2).mean(),
                                generator_loss=lambda fake, real=None: (fake.logits - 1).pow(2).mean())]

    register_plugin(OldStyle(), "old-style")
    run = ganzoo.train(variant="old-style", steps=3, out=tmp_path / "old", progress=False)
    assert run.status == "completed"
    assert (run.config.d_steps, run.config.optimizer, run.config.lr, run.config.betas) == (1, "adam", 2e-4,
                                                                                           (0.5, 0.999))


def test_broken_plugin_is_reported_and_the_rest_still_work(tmp_path):
    site = make_distribution(tmp_path / "site", "ganzoo-broken", "ganzoo_broken",
                             "raise ImportError('needs a library that is not installed')")
    make_distribution(site, "ganzoo-typo", "ganzoo_typo", """
        from ganzoo.hookspecs import hookimpl
        @hookimpl
        def ganzoo_variant():   # misspelt hook name
            return []
    """)
    make_distribution(site, "ganzoo-extra", "ganzoo_extra", VARIANT_SOURCE.format(name="extra"))
    env = {"PYTHONPATH": str(site)}
    listing = run_ganzoo("list", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "extra" in listing.stdout and "vanilla" in listing.stdout
    assert "plugin 'ganzoo_broken' (ganzoo-broken 0.3) failed to load" in listing.stderr
    assert "Traceback" not in listing.stderr
    plugins = run_ganzoo("plugins", env=env)
    assert plugins.returncode == 1
    failed = plugins.stdout.split("failed plugins:")[1]
    assert "ganzoo_broken" in failed and "needs a library that is not installed" in failed
    assert "ganzoo_typo" in failed and "ganzoo_variant" in failed


def test_duplicate_names_name_both_plugins_and_block_list_resolves_it(tmp_path):
    site = make_distribution(tmp_path / "site", "ganzoo-clash", "ganzoo_clash", VARIANT_SOURCE.format(name="lsgan"))
    clash = run_ganzoo("train", "--variant", "lsgan", "--steps", "1", "--out", tmp_path / "r",
                       env={"PYTHONPATH": str(site)})
    assert clash.returncode == 2
    err = clash.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "'lsgan' is registered twice" in err and "ganzoo-clash 0.3" in err and "plugin 'lsgan' (ganzoo " in err
    blocked = run_ganzoo("list", env={"PYTHONPATH": str(site), "GANZOO_BLOCK_PLUGINS": "ganzoo_clash"})
    assert blocked.returncode == 0 and "ganzoo-clash" not in blocked.stdout


def test_malformed_spec_is_reported_by_name_and_the_rest_still_work(register_plugin, cli, tmp_path):
    class Malformed:
        @hookimpl
        def ganzoo_variants(self):
            return [{"name": "dict-variant"}]

    register_plugin(Malformed(), "malformed")
    code, _, err = cli("train", "--variant", "vanilla", "--steps", "1", "--out", tmp_path / "r", "--quiet")
    assert code == 0, err
    assert "plugin 'malformed'" in err and "malformed spec (dict, expected VariantSpec)" in err
    code, out, _ = cli("plugins")
    assert code == 1 and "malformed" in out.split("failed plugins:")[1]


def test_spec_with_bad_name_is_malformed(register_plugin, capsys):
    class BadName:
        @hookimpl
        def ganzoo_variants(self):
            return [VariantSpec(name="two words", description="x", discriminator_loss=abs, generator_loss=abs)]

    register_plugin(BadName(), "badname")
    assert "vanilla" in registry.entries("variant") and "two words" not in registry.entries("variant")
    assert "malformed spec: name 'two words'" in capsys.readouterr().err
    with pytest.raises(GanzooError, match="plugins that failed: badname: ganzoo_variants returned a malformed spec"):
        registry.variant("two words")


def test_plugin_whose_hook_raises_is_reported_by_name_and_the_rest_still_work(tmp_path):
    site = make_distribution(tmp_path / "site", "ganzoo-raises", "ganzoo_raises", """
        from ganzoo.hookspecs import hookimpl
        @hookimpl
        def ganzoo_variants():
            raise RuntimeError("hook exploded")
    """)
    env = {"PYTHONPATH": str(site)}
    listing = run_ganzoo("list", env=env)
    assert listing.returncode == 0 and "vanilla" in listing.stdout and "wgan-gp" in listing.stdout
    assert "plugin 'ganzoo_raises' (ganzoo-raises 0.3) was skipped: ganzoo_variants raised RuntimeError: " \
           "hook exploded" in listing.stderr
    assert "Traceback" not in listing.stderr
    trained = run_ganzoo("train", "--variant", "hinge", "--steps", "2", "--out", tmp_path / "r", "--quiet", env=env)
    assert trained.returncode == 0, trained.stderr
    plugins = run_ganzoo("plugins", env=env)
    assert plugins.returncode == 1 and "hook exploded" in plugins.stdout.split("failed plugins:")[1]


def test_unknown_names_list_what_is_available(cli):
    code, _, err = cli("train", "--variant", "wgan-xx", "--steps", "1")
    assert code == 2
    assert "unknown variant 'wgan-xx'; available: dragan (ganzoo), feature-matching (ganzoo), hinge (ganzoo), " \
           "lecam (ganzoo-lecam), lsgan (ganzoo)" in err and "wgan-lp (ganzoo-wgan-lp)" in err
    code, _, err = cli("train", "--arch", "stylegan", "--steps", "1")
    assert code == 2 and "unknown architecture 'stylegan'; available: dcgan (ganzoo), mlp (ganzoo), " \
                         "pacgan-mlp (ganzoo), resnet (ganzoo), unrolled-dcgan (ganzoo)" in err
    code, _, err = cli("train", "--dataset", "imagenet", "--steps", "1")
    assert code == 2 and "unknown dataset 'imagenet'; available:" in err and "mnist5k (ganzoo)" in err
