"""Plugins arrive through real entry points: installed distributions, broken ones, clashing ones."""
import textwrap

import pytest
import torch

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
    failed = plugins.stdout.split("plugins that failed to load:")[1]
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
    assert code == 1 and "malformed" in out.split("hooks left out")[1]


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
    assert "plugin 'ganzoo_raises' (ganzoo-raises 0.3): its hook ganzoo_variants raised RuntimeError: " \
           "hook exploded; what that hook adds was left out" in listing.stderr
    assert "Traceback" not in listing.stderr
    trained = run_ganzoo("train", "--variant", "hinge", "--steps", "2", "--out", tmp_path / "r", "--quiet", env=env)
    assert trained.returncode == 0, trained.stderr
    plugins = run_ganzoo("plugins", env=env)
    assert plugins.returncode == 1 and "hook exploded" in plugins.stdout.split("hooks left out")[1]


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


# ---- what a plugin author meets: errors that name the plugin and the place ----


class OptionTypo:
    """A variant whose configure misspells its own option: a bug in the plugin, not bad input."""

    @hookimpl
    def ganzoo_variants(self):
        from ganzoo.specs import Option
        from ganzoo_plugins.vanilla import bce_discriminator_loss, non_saturating_generator_loss

        def make(weight=10.0):
            return VariantSpec(name="typo", description=f"weight {weight}", discriminator_loss=bce_discriminator_loss,
                               generator_loss=non_saturating_generator_loss,
                               options={"lambda": Option(10.0, "a weight")},
                               configure=lambda options: make(options["lamdba"]))

        return [make()]


def test_a_bug_in_a_plugins_configure_names_the_plugin_and_the_line(register_plugin, cli, tmp_path):
    import inspect

    register_plugin(OptionTypo(), "typo-plugin")
    code, out, err = cli("train", "--variant", "typo", "--steps", "1", "--out", tmp_path / "r", "--quiet")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    line = next(n for n, text in enumerate(inspect.getsourcelines(OptionTypo)[0]) if "lamdba" in text)
    line += inspect.getsourcelines(OptionTypo)[1]
    assert "a bug in plugin 'typo-plugin'" in err and "variant 'typo' configure raised KeyError: 'lamdba'" in err
    assert f"(at test_plugins.py:{line})" in err and "internal error" not in err
    assert not (tmp_path / "r").exists()  # found before anything was written


def test_a_bug_in_an_architectures_network_names_the_plugin(register_plugin, cli, tmp_path):
    from ganzoo.specs import ArchitectureSpec
    from ganzoo_plugins.mlp import MLPGenerator

    def broken_discriminator(shape):
        return torch.nn.Linear(shape.numel, "wide")  # a TypeError inside torch, called from here

    class Broken:
        @hookimpl
        def ganzoo_architectures(self):
            return [ArchitectureSpec(name="broken-d", description="x", build_generator=MLPGenerator,
                                     build_discriminator=broken_discriminator)]

    register_plugin(Broken(), "broken-arch")
    code, _, err = cli("train", "--arch", "broken-d", "--steps", "1", "--out", tmp_path / "r", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "a bug in plugin 'broken-arch'" in err and "architecture 'broken-d' build_discriminator raised" in err
    assert "(at test_plugins.py:" in err  # the plugin's line, not torch's


class HalfBroken:
    """Two hooks: its variants are malformed (a penalty asks for an unknown step argument), its architecture fine."""

    @hookimpl
    def ganzoo_variants(self):
        from ganzoo.specs import Penalty
        from ganzoo_plugins.vanilla import bce_discriminator_loss, non_saturating_generator_loss

        return [VariantSpec(name="asks-too-much", description="x", discriminator_loss=bce_discriminator_loss,
                            generator_loss=non_saturating_generator_loss,
                            penalties=(Penalty("p", lambda discriminate, labels: discriminate.sum()),))]

    @hookimpl
    def ganzoo_architectures(self):
        from ganzoo.specs import ArchitectureSpec
        from ganzoo_plugins.mlp import MLPDiscriminator, MLPGenerator

        return [ArchitectureSpec(name="half-mlp", description="x", build_generator=MLPGenerator,
                                 build_discriminator=MLPDiscriminator)]


def test_plugins_says_which_contributions_of_a_plugin_loaded(register_plugin, cli):
    register_plugin(HalfBroken(), "half-broken")
    code, out, _ = cli("plugins")
    assert code == 1
    loaded, left_out = out.split("hooks left out")
    line = next(text for text in loaded.splitlines() if text.strip().startswith("half-broken "))
    assert "ganzoo_architectures: half-mlp" in line and "ganzoo_variants: FAILED" in line
    assert "asks-too-much" not in loaded and "plugins that failed to load" not in out  # it did load
    assert "half-broken  ganzoo_variants returned a malformed spec: 'asks-too-much' penalty p asks for labels" \
        in left_out
    assert "half-mlp" in registry.entries("architecture") and "asks-too-much" not in registry.entries("variant")


# ---- ganzoo list, the README, and reusing a built-in network ----


def test_list_prints_a_datasets_source_as_its_source(cli):
    code, out, _ = cli("list")
    datasets = out.split("datasets:")[1].split("extractors:")[0]
    assert "source: LeCun et al. 1998, MNIST" in datasets and "paper:" not in datasets
    assert "paper: Goodfellow et al. 2014" in out  # methods keep their paper
    code, out, _ = cli("list", "--json")
    import json

    listed = {d["name"]: d for d in json.loads(out)["dataset"]}
    assert listed["mnist5k"]["source"].startswith("LeCun et al. 1998") and "paper" not in listed["mnist5k"]


def test_the_readme_describes_the_mlp_generator_as_built():
    from pathlib import Path

    from ganzoo.specs import ImageShape
    from ganzoo_plugins.mlp import MLPGenerator

    norms = [m for m in MLPGenerator(100, ImageShape(1, 28)).modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert [m.num_features for m in norms] == [512, 1024]
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    line = next(text for text in readme.splitlines() if text.startswith("- `mlp`: "))
    assert "BatchNorm on the 512- and 1024-unit layers" in line
    assert "BatchNorm" in registry.entries("architecture")["mlp"].spec.description


def readme_block(marker: str) -> str:
    """The fenced Python block of the README that follows the line holding `marker`."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    after = readme[readme.index(marker):]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_a_new_discriminator_with_the_built_in_generator_as_the_readme_shows(register_plugin, tmp_path):
    """The README's example plugin reuses mlp's G with a D of its own, and trains."""
    import types

    import ganzoo
    from ganzoo_plugins.mlp import MLPGenerator

    module = types.ModuleType("ganzoo_wide_d")
    exec(compile(readme_block("A new discriminator with a built-in generator"), "README.md", "exec"),
         module.__dict__)
    register_plugin(module, "wide-d")
    spec = registry.architecture("mlp-wide-d")
    assert spec.build_generator is MLPGenerator
    run = ganzoo.train(arch="mlp-wide-d", steps=2, batch_size=32, out=tmp_path / "r", progress=False)
    assert run.status == "completed"
    state = torch.load(run.checkpoint, weights_only=True)
    assert state["discriminator"]["body.1.weight"].shape == (1024, 784)  # its own, wider D


def test_a_block_list_name_that_matches_no_plugin_is_named_in_a_warning():
    from conftest import run_ganzoo

    done = run_ganzoo("list", env={"GANZOO_BLOCK_PLUGINS": "lsgan, no-such-plugin,typo"})
    assert done.returncode == 0, done.stderr
    assert ("ganzoo: warning: GANZOO_BLOCK_PLUGINS names 'no-such-plugin', 'typo', which are no installed plugin"
            in done.stderr)
    assert "'lsgan'" not in done.stderr  # a name that matches is not warned about; it is blocked
    assert "\n  lsgan " not in done.stdout


@pytest.mark.parametrize("value, traceback", [("0", False), ("", False), ("false", False), ("FALSE", False),
                                              ("off", False), ("1", True), ("yes", True)])
def test_ganzoo_debug_zero_empty_and_false_mean_off(monkeypatch, cli, value, traceback):
    import ganzoo.cli as cli_module

    def bug(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setenv("GANZOO_DEBUG", value)
    monkeypatch.setattr(cli_module, "run_list", bug)
    parser = cli_module.build_parser
    monkeypatch.setattr(cli_module, "build_parser", lambda: _with_handler(parser(), bug))
    if traceback:
        with pytest.raises(ZeroDivisionError):
            cli("list")
    else:
        code, _, err = cli("list")
        assert code == 1 and err.startswith("ganzoo: internal error: ZeroDivisionError: a bug")


def _with_handler(parser, handler):
    for action in parser._subparsers._group_actions:
        action.choices["list"].set_defaults(handler=handler)
    return parser
