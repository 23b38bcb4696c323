"""The ``ganzoo`` command: a thin argparse layer over the Python API.

Each command is a pair: ``add_<name>(subparsers)`` declares its arguments, ``run_<name>(args)`` calls the API
and prints. Bad input raises GanzooError, which main() prints as one line with exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import textwrap
from typing import Callable, Optional

from . import __version__, escape
from .errors import DivergedError, GanzooError, debugging

COMMANDS: list[tuple[str, str, Callable, Callable]] = []  # (name, help, add_arguments, run)


def command(name: str, help: str):
    """Register ``run`` as the command `name`; its add_arguments is the decorated function's `arguments`."""

    def register(run: Callable) -> Callable:
        COMMANDS.append((name, help, getattr(run, "arguments", lambda p: None), run))
        return run

    return register


def arguments(add: Callable[[argparse.ArgumentParser], None]):
    def attach(run: Callable) -> Callable:
        run.arguments = add
        return run

    return attach


# ---------------------------------------------------------------------------------------------------------
# ganzoo list / ganzoo plugins


def _add_list(p):
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


@command("list", "list registered variants, architectures and datasets")
@arguments(_add_list)
def run_list(args) -> int:
    from . import registry
    from .config import describe_recipe

    kinds = {kind: registry.entries(kind) for kind in registry.KINDS}
    if args.json:
        print(json.dumps({kind: [{"name": n, "description": e.spec.description, **_references(e.spec),
                                  "plugin": e.plugin, "provided_by": e.origin,
                                  **({"recipe": dataclasses.asdict(e.spec.recipe)} if kind == "variant" else {}),
                                  **({"columns": [dataclasses.asdict(c) for c in e.spec.columns]}
                                     if kind == "metric" else {}),
                                  "options": {k: {"default": o.default, "help": o.help}
                                              for k, o in (getattr(e.spec, "options", None) or {}).items()}}
                                 for n, e in found.items()]
                          for kind, found in kinds.items()}, indent=2))
        return 0
    for kind, found in kinds.items():
        _say(f"{kind}s:")
        if not found:
            _say("  (none)")
        width = max((len(n) for n in found), default=0)
        for name, entry in found.items():
            _say(f"  {name:<{width}}  {entry.spec.description}  [{entry.origin}]")
            for label, text in _references(entry.spec).items():
                if text:
                    _say(f"  {'':<{width}}  {label}: {text}")
            if kind == "variant":
                _say(f"  {'':<{width}}  recipe: {describe_recipe(entry.spec.recipe)}")
            if kind == "dataset":
                from .evaluation import default_metrics

                _say(f"  {'':<{width}}  samples: {entry.spec.shape.describe()}; metrics: "
                      f"{', '.join(default_metrics(entry.spec))}")
            if kind == "metric":
                _say(f"  {'':<{width}}  columns: " + ", ".join(
                    f"{c.name} ({c.better} is better)" if c.better else c.name for c in entry.spec.columns))
            for option, declared in (getattr(entry.spec, "options", None) or {}).items():
                _say(f"  {'':<{width}}  option {option}={declared.default!r}: {declared.help}")
        _say()
    return 0


def _say(line: str = "") -> None:
    """A line of `ganzoo list` or `ganzoo plugins`: what plugins wrote (names, descriptions, errors) is shown, never
    obeyed by the terminal (escape.terminal)."""
    print(escape.terminal(line))


def _references(spec) -> dict[str, str]:
    """A method's paper, or a dataset's source (where its data comes from), under its own label."""
    return {label: getattr(spec, label) for label in ("paper", "source") if hasattr(spec, label)}


@command("plugins", "list loaded plugins, their versions and hooks, and plugins that failed to load")
def run_plugins(args) -> int:
    from . import registry
    from .plugins import failed_hooks, loaded_plugins, unloaded_plugins

    problems = []
    contributed: dict[tuple[str, str], list[str]] = {}  # (plugin, hook) -> the names it added
    for kind, (hook, _) in registry.KINDS.items():  # first: a plugin whose hook fails is recorded as it is called
        try:
            for name, entry in registry.entries(kind).items():
                contributed.setdefault((entry.plugin, hook), []).append(name)
        except GanzooError as exc:
            problems.append(str(exc))
    hook_failures = failed_hooks()
    loaded = loaded_plugins()
    width = max((len(info.name) for info, _ in loaded), default=0)
    module_width = max((len(info.module) for info, _ in loaded), default=0)
    _say("loaded plugins:")
    for info, hooks in loaded:
        added = "; ".join(_contribution(info.name, hook, contributed, hook_failures) for hook in hooks) or "-"
        _say(f"  {info.name:<{width}}  {info.origin:<20} {info.module:<{module_width}}  {added}")
    not_loaded = unloaded_plugins()
    if not_loaded:
        _say()
        _say("plugins that failed to load:")
        for info in not_loaded:
            _say(f"  {info.name}  {info.origin}  {info.module}: {info.error}")
    if hook_failures:
        _say()
        _say("hooks left out (the rest of each plugin loaded):")
        for (name, _), reason in sorted(hook_failures.items()):
            _say(f"  {name}  {reason}")
    if problems:
        _say()
        _say("registry problems:")
        for problem in problems:
            _say(f"  {problem}")
    return 1 if not_loaded or hook_failures or problems else 0


def _contribution(plugin: str, hook: str, contributed: dict, failed: dict) -> str:
    """'ganzoo_variants: wgan-lp', or that the hook's contributions were left out."""
    if (plugin, hook) in failed:
        return f"{hook}: FAILED, nothing added (below)"
    names = contributed.get((plugin, hook))
    return f"{hook}: {', '.join(names)}" if names else hook


# ---------------------------------------------------------------------------------------------------------
# ganzoo train / ganzoo sample


def _add_train(p):
    from .config import TrainConfig

    d = TrainConfig()
    p.add_argument("--variant", default=d.variant, help=f"GAN variant (default {d.variant}; see `ganzoo list`)")
    p.add_argument("--arch", default=d.arch, help=f"architecture (default {d.arch})")
    p.add_argument("--dataset", default=d.dataset, help=f"dataset (default {d.dataset})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"generator steps (default {d.steps})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--latent-dim", type=int, default=d.latent_dim, help=f"default {d.latent_dim}")
    recipe = p.add_argument_group("recipe (default: the variant's own, shown by `ganzoo list`; the reference "
                                  "recipe is 1 D step, adam lr 0.0002 betas (0.5, 0.999))")
    recipe.add_argument("--d-steps", type=int, default=None, help="discriminator (critic) steps per generator step")
    recipe.add_argument("--optimizer", default=None, help="adam or rmsprop, for both networks")
    recipe.add_argument("--lr", type=float, default=None, help="learning rate for both networks")
    recipe.add_argument("--betas", type=float, nargs=2, default=None, metavar=("B1", "B2"), help="Adam's betas")
    p.add_argument("--variant-option", action="append", default=[], metavar="KEY=VALUE",
                   help="variant option, repeatable, e.g. --variant-option gamma=1 for r1 (`ganzoo list` shows them)")
    p.add_argument("--arch-option", action="append", default=[], metavar="KEY=VALUE",
                   help="architecture option, repeatable")
    p.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                   help="keep an exponential moving average of G's weights (e.g. 0.999) and evaluate and sample "
                        "with it (default 0: off)")
    p.add_argument("--ema-start", type=int, default=d.ema_start, metavar="STEP",
                   help="generator steps before averaging starts (G_ema copies G until then; default 0)")
    remedies = p.add_argument_group("remedies for mode collapse (any variant and architecture)")
    remedies.add_argument("--pack", type=int, default=d.pack, metavar="M",
                          help="PacGAN: D judges packs of M samples; a batch is --batch-size packs, M times as many "
                               "samples, as in the PacGAN code (default 1: off)")
    remedies.add_argument("--unroll", type=int, default=d.unroll, metavar="K",
                          help="Unrolled GAN: G's loss through a copy of D advanced K optimizer steps, with "
                               "gradients through them (default 0: off)")
    conditional = p.add_argument_group("class-conditional GANs (any variant and architecture; a labelled dataset)")
    conditional.add_argument("--condition", default=d.condition, metavar="METHOD",
                             help="feed the class label to G and D: concat, projection, acgan, or another "
                                  "conditioning plugin (`ganzoo list`); default none")
    conditional.add_argument("--condition-option", action="append", default=[], metavar="KEY=VALUE",
                             help="conditioning option, repeatable, e.g. fake_term=false for acgan")
    conditional.add_argument("--fake-labels", default=d.fake_labels, metavar="HOW",
                             help="classes G is asked for in training: uniform (default) or data (the training "
                                  "split's label distribution)")
    small = p.add_argument_group("small data (any variant and architecture; README 'Small data')")
    small.add_argument("--augment", default=d.augment, metavar="NAME",
                       help="differentiable augmentation of every image D sees, real and generated: diffaugment, "
                            "ada, or a plugin's (`ganzoo list` shows them; default: none)")
    small.add_argument("--augment-option", action="append", default=[], metavar="KEY=VALUE",
                       help="augmentation option, repeatable, e.g. policy=color,translation for diffaugment, "
                            "target=0.6 speed=500000 for ada")
    small.add_argument("--train-subset", type=int, default=d.train_subset, metavar="N",
                       help="train on N images of the training split, stratified by class where it has labels "
                            "(the same N for every seed; the reference split unchanged; default 0: all)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    p.add_argument("--data-root", default=None, help="folder holding downloaded datasets (default: GANZOO_DATA "
                   "or ~/.local/share/ganzoo/data)")
    p.add_argument("--download", action="store_true", help="let the dataset fetch missing files (needs a network)")
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option, repeatable, e.g. imagefolder's folder=DIR size=64 channels=3")
    p.add_argument("--device", default=d.device, help="auto (default: cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--out", default=None, help="run folder (default runs/<variant>-<arch>-<dataset>-seed<seed>)")
    p.add_argument("--overwrite", action="store_true", help="replace a different run already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--eval-every", type=int, default=d.eval_every, metavar="K",
                   help="score IS/FID/KID every K steps and at the end into eval.csv (default 0: off)")
    p.add_argument("--eval-samples", type=int, default=d.eval_samples,
                   help=f"generated images per in-training evaluation (default {d.eval_samples})")
    p.add_argument("--eval-extractor", default=None, help="feature extractor for those (default: the dataset's)")
    p.add_argument("--eval-metrics", default=None, metavar="A,B",
                   help="metrics for those (default: the dataset's; `ganzoo list` shows them)")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="Inception weights file for --eval-extractor inception-v3-compat")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log losses, D outputs, scores and sample grids to <out>/tensorboard/ "
                        "(pip install 'ganzoo[tensorboard]')")
    speed = p.add_argument_group("speed (benchmarks/RESULTS.md, 'Training speed'; only --precision changes the run)")
    speed.add_argument("--precision", default=d.precision,
                       help="fp32 (default) or bf16 (bfloat16 autocast for forward passes; a different run)")
    speed.add_argument("--adam", default=d.adam, help="Adam kernel: fused (default), foreach, for-loop")
    speed.add_argument("--compile", default=d.compile, metavar="MODE",
                       help="torch.compile G and D: off (default), default, reduce-overhead (CUDA graphs), "
                            "max-autotune; pays on GPUs, not on CPUs")
    speed.add_argument("--channels-last", action="store_true", help="NHWC layout for convolutions (GPUs)")
    speed.add_argument("--threads", type=int, default=d.threads,
                       help="CPU threads for training (default 0: torch's default; 1 on a busy shared CPU)")


@command("train", "train one GAN; writes checkpoint, config, per-step log and a sample grid")
@arguments(_add_train)
def run_train(args) -> int:
    from .config import TrainConfig, describe_training
    from .training import train

    config = TrainConfig(variant=args.variant, arch=args.arch, dataset=args.dataset, steps=args.steps,
                         seed=args.seed, batch_size=args.batch_size, latent_dim=args.latent_dim, lr=args.lr,
                         betas=args.betas and tuple(args.betas), d_steps=args.d_steps, optimizer=args.optimizer,
                         device=args.device, checkpoint_every=args.checkpoint_every, data_root=args.data_root,
                         download=args.download, dataset_options=parse_options(args.dataset_option),
                         variant_options=parse_options(args.variant_option, "--variant-option"),
                         arch_options=parse_options(args.arch_option, "--arch-option"),
                         ema=args.ema, ema_start=args.ema_start, pack=args.pack, unroll=args.unroll,
                         condition=args.condition,
                         condition_options=parse_options(args.condition_option, "--condition-option"),
                         fake_labels=args.fake_labels,
                         augment=args.augment, augment_options=parse_options(args.augment_option, "--augment-option"),
                         train_subset=args.train_subset,
                         eval_every=args.eval_every, eval_samples=args.eval_samples,
                         eval_extractor=args.eval_extractor, inception_weights=args.inception_weights,
                         eval_metrics=list(parse_metrics(args.eval_metrics) or []) or None,
                         precision=args.precision, adam=args.adam, compile=args.compile,
                         channels_last=args.channels_last, threads=args.threads, tensorboard=args.tensorboard)
    run = train(config, out=args.out, overwrite=args.overwrite, progress=not args.quiet)
    s = run.stats
    final = s.get("final", {})
    print(f"{run.status}: {run.path}  step {run.step}/{run.config.steps}  "
          f"d_loss {final.get('d_loss', float('nan')):.4f}  g_loss {final.get('g_loss', float('nan')):.4f}  "
          f"D(x) {final.get('d_real', float('nan')):.3f}  D(G(z)) {final.get('d_fake', float('nan')):.3f}  "
          f"{s.get('wall_time_s', 0):.1f} s  {s.get('g_images_per_s', 0):.0f} generated img/s")
    print(f"recipe: {describe_training(run.config)}")
    overfitting = s.get("overfitting")
    if overfitting:
        print(f"overfitting: mean D on {overfitting['images']} training images {overfitting['d_train']:.3f}, on as many "
              f"held-out ones {overfitting['d_heldout']:.3f}, gap {overfitting['d_gap']:+.3f}"
              + "".join(f"; {k[len('augment_'):]} {v:.3g}" for k, v in final.items() if k.startswith("augment_")))
    print(f"samples: {run.grid}")
    if s.get("best_fid") is not None:
        print(f"{s.get('eval_extractor')} FID during training: best {s['best_fid']:.4f} at step "
              f"{s['best_fid_step']}, final {s['final_fid']:.4f} (curve: {run.path / 'eval.csv'})")
    elif s.get("best_value") is not None:
        print(f"{s['curve_metric']} during training: best {s['best_value']:.4f} at step {s['best_step']}, final "
              f"{s['final_value']:.4f} (curve: {run.path / 'eval.csv'})")
    return 0


def parse_options(pairs: list[str], flag: str = "--dataset-option") -> dict[str, str]:
    """["folder=img", "size=64"] -> {"folder": "img", "size": "64"}; a repeated key is a mistake, not an override."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise GanzooError(f"{flag} expects KEY=VALUE, got {pair!r}")
        if key.strip() in options:
            raise GanzooError(f"{flag} {key.strip()} given twice")
        options[key.strip()] = value
    return options


def per_variant_options(pairs: list[str]) -> Optional[dict[str, dict[str, str]]]:
    """["r1.gamma=1", "wgan-gp.lambda=5"] -> {"r1": {"gamma": "1"}, "wgan-gp": {"lambda": "5"}}."""
    return per_name_options(pairs, "--variant-option", "VARIANT")


def per_name_options(pairs: list[str], flag: str, owner: str) -> Optional[dict[str, dict[str, str]]]:
    """NAME.KEY=VALUE pairs of a bench flag, grouped by the plugin they are for: {"dcgan": {"width": "32"}}."""
    by_name: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name, dot, option = key.rpartition(".")
        if not sep or not dot or not name.strip() or not option.strip():
            raise GanzooError(f"{flag} expects {owner}.KEY=VALUE, got {pair!r}")
        by_name.setdefault(name.strip(), []).append(f"{option}={value}")
    return {name: parse_options(given, f"{flag} for {name}:") for name, given in by_name.items()} or None


def parse_setups(given: list[str]) -> Optional[dict[str, dict[str, str]]]:
    """["pacgan2:pack=2,batch_size=200", "unrolled5:unroll=5"] -> {"pacgan2": {"pack": 2, ...}, ...}: values parsed
    as TOML would (numbers, true/false), an arch option as arch_options.NAME=VALUE."""
    setups: dict[str, dict] = {}
    for text in given:
        name, sep, rest = text.partition(":")
        if not sep or not name.strip():
            raise GanzooError(f"--setup expects NAME:KEY=VALUE[,KEY=VALUE...], got {text!r}")
        changes: dict = {}
        for pair in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = pair.partition("=")
            if not eq or not key.strip():
                raise GanzooError(f"--setup {name}: expected KEY=VALUE, got {pair!r}")
            target, key = changes, key.strip()
            for table in ("arch_options", "augment_options"):
                if key.startswith(f"{table}."):
                    target, key = changes.setdefault(table, {}), key[len(table) + 1:]
            target[key] = _toml_value(value.strip())
        setups[name.strip()] = changes
    return setups or None


def _toml_value(text: str):
    """A command-line value as TOML would read it: an integer, a float, true/false, else the string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_metrics(text: Optional[str]):
    from .evaluation import parse_metrics as parse

    return parse(text)


def _add_sample(p):
    p.add_argument("--run", required=True, help="run folder written by `ganzoo train`")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--seed", type=int, default=0, help="latent noise seed (default 0)")
    p.add_argument("--out", default=None, help="write images to this .npz (key 'images', uint8 N x C x H x W; "
                                               "'labels' too for a conditional run)")
    p.add_argument("--grid", default=None, help="write a PNG grid of (up to 256 of) the images")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--class", dest="class_", type=int, default=None, metavar="K",
                       help="conditional runs: every image of class K")
    which.add_argument("--labels", default=None, metavar="LIST",
                       help="conditional runs: comma-separated classes, one per image, or 'balanced' (every class in "
                            "turn: the grid shows one row per class); default: the training split's class mix")
    p.add_argument("--device", default="auto")


@command("sample", "generate images from a trained run (.npz and/or PNG grid)")
@arguments(_add_sample)
def run_sample(args) -> int:
    from .sampling import sample

    if args.out is None and args.grid is None:
        raise GanzooError("nothing to write: pass --out FILE.npz and/or --grid FILE.png")
    labels = args.class_ if args.class_ is not None else args.labels
    images = sample(args.run, n=args.n, seed=args.seed, out=args.out, grid=args.grid, device=args.device,
                    labels=labels)
    written = [p for p in (args.out, args.grid) if p]
    what = f", class {args.class_}" if args.class_ is not None else (f", labels {args.labels}" if args.labels else "")
    print(f"{len(images)} images {tuple(images.shape[1:])} uint8{what} -> {', '.join(written)}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# ganzoo eval


def _add_eval(p):
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", dest="run_folder", metavar="RUN",  # not args.run: that name has meant the handler
                      help="run folder written by `ganzoo train`: score its generator")
    what.add_argument("--real", metavar="DATASET",
                      help="score real data instead: the dataset's training images against its reference split")
    p.add_argument("--extractor", default=None,
                   help="feature extractor (default: classifier for labelled datasets, else inception-v3-compat)")
    p.add_argument("--n", type=int, default=None,
                   help="generated images (default 5000; with --real: real images, default min(5000, split))")
    p.add_argument("--n-real", type=int, default=None, help="reference images (default: the whole reference split)")
    p.add_argument("--seed", type=int, default=0, help="latent noise, subset and KID subset seed (default 0)")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="weights-inception-2015-12-05-6726825d.pth (default: $TORCH_HOME/hub/checkpoints/, "
                        "downloaded there if missing unless GANZOO_OFFLINE=1)")
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                   help="with --real: dataset option, repeatable")
    p.add_argument("--data-root", default=None, help="with --real: folder holding downloaded datasets")
    p.add_argument("--metrics", default=None, metavar="A,B",
                   help="metrics to compute (default: the dataset's own; `ganzoo list` shows them all)")
    p.add_argument("--metric-option", action="append", default=[], metavar="METRIC.KEY=VALUE",
                   help="a metric's option, repeatable, e.g. mixture-modes.samples=5000")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print the record (metrics and protocol.*) as JSON")


@command("eval", "score a trained run (or real data) with IS, FID and KID, printing the protocol with them")
@arguments(_add_eval)
def run_eval(args) -> int:
    from .evaluation import DEFAULT_N_FAKE, evaluate, real_reference

    metrics = parse_metrics(args.metrics)
    metric_options = per_name_options(args.metric_option, "--metric-option", "METRIC")
    if args.run_folder is not None:
        if args.dataset_option or args.data_root:
            raise GanzooError("--dataset-option and --data-root go with --real; a run uses its own")
        result = evaluate(args.run_folder, args.extractor, n_fake=DEFAULT_N_FAKE if args.n is None else args.n,
                          n_real=args.n_real, seed=args.seed, device=args.device,
                          inception_weights=args.inception_weights, metrics=metrics, metric_options=metric_options)
    else:
        result = real_reference(args.real, args.extractor, n=args.n, seed=args.seed, n_real=args.n_real,
                                device=args.device, inception_weights=args.inception_weights,
                                dataset_options=parse_options(args.dataset_option), data_root=args.data_root,
                                metrics=metrics, metric_options=metric_options)
    if args.json:
        print(json.dumps(result.to_record(), indent=2))
    else:
        print(result.summary())
    return 0


# ---------------------------------------------------------------------------------------------------------
# ganzoo bench / ganzoo leaderboard / ganzoo compare


def _add_bench(p):
    p.add_argument("--config", default=None,
                   help="benchmark preset (TOML), e.g. benchmarks/paper.toml; default: the CPU-sized grid of benchmarks/cpu.toml")
    p.add_argument("--variants", default=None, help="comma-separated variants, or 'all' (default: all registered)")
    p.add_argument("--archs", default=None, help="comma-separated architectures")
    p.add_argument("--datasets", default=None, help="comma-separated datasets")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--steps", type=int, default=None, help="training steps per run")
    p.add_argument("--eval-every", type=int, default=None, help="steps between FID curve points (0: none)")
    p.add_argument("--n-fake", type=int, default=None, help="generated images for each final score")
    p.add_argument("--extractor", default=None, help="feature extractor (default: the dataset's default)")
    p.add_argument("--metrics", default=None, metavar="A,B",
                   help="metrics every cell is scored with (default: each dataset's own; `ganzoo list` shows them)")
    p.add_argument("--metric-option", action="append", default=[], metavar="METRIC.KEY=VALUE",
                   help="a metric's option, repeatable (adds to a preset's [metric_options])")
    p.add_argument("--setup", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                   help="a named training setup, a grid axis like the variants, repeatable, e.g. "
                        "pacgan2:pack=2 or unrolled5:unroll=5 or mbstd:arch_options.mbstd=4 "
                        "(adds to a preset's [setups])")
    p.add_argument("--conditions", default=None, metavar="A,B",
                   help="a grid axis of conditioning methods, e.g. none,concat,projection,acgan (over the preset's)")
    p.add_argument("--condition", default=None, metavar="METHOD",
                   help="train every cell conditionally with this method (the same as --conditions METHOD)")
    p.add_argument("--condition-option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a conditioning method's option, repeatable, e.g. acgan.fake_term=false")
    p.add_argument("--setups", default=None, metavar="A,B",
                   help="run only these of the preset's [setups], in this order")
    p.add_argument("--variant-option", action="append", default=[], metavar="VARIANT.KEY=VALUE",
                   help="a variant's option, repeatable, e.g. r1.gamma=1 (adds to a preset's [variant_options])")
    p.add_argument("--arch-option", action="append", default=[], metavar="ARCH.KEY=VALUE",
                   help="an architecture's option, repeatable, e.g. dcgan.spectral_norm=true (adds to a preset's "
                        "[arch_options])")
    p.add_argument("--inception-weights", default=None, help="path to the Inception weights file, if not cached")
    p.add_argument("--data-root", default=None, help="folder holding downloaded datasets")
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset option for every dataset of the benchmark, repeatable (over the TOML's "
                        "[dataset_options]); e.g. imagefolder's folder=DIR size=64 channels=3")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--out", default="bench", help="report folder (default bench/)")
    p.add_argument("--format", default=None, choices=["md", "latex", "csv", "html"],
                   help="print the full leaderboard in this format instead of the compact table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="log every run to its folder's tensorboard/ (tensorboard --logdir <out>/runs)")
    p.add_argument("--jobs", type=int, default=None,
                   help="cells trained at once, each in its own process with (CPUs / jobs) torch threads "
                        "(default 1: one after another in this process); several small runs can share a GPU")
    ray = p.add_argument_group("running the grid on Ray (pip install 'ganzoo[ray]')")
    ray.add_argument("--executor", default="local",
                     help="local (default: the cells run on this machine, --jobs at a time) or ray (each cell a "
                          "Ray task)")
    ray.add_argument("--ray-address", default=None,
                     help="Ray cluster to use (default: start a local Ray instance; 'auto': join the running one)")
    ray.add_argument("--gpus-per-run", type=float, default=None,
                     help="GPUs per task (default 1 when training on GPU, else 0; 0.25 lets 4 runs share a GPU)")
    ray.add_argument("--cpus-per-run", type=float, default=None, help="CPUs per task (default 1)")
    ray.add_argument("--max-retries", type=int, default=None,
                     help="times a task whose worker died is retried before it is recorded as failed (default 2)")


@command("bench", "train and score a grid of variants x archs x datasets x seeds; resumable; writes a report")
@arguments(_add_bench)
def run_bench(args) -> int:
    from .bench import bench, load_spec
    from .executors import make_executor

    executor = make_executor(args.executor, jobs=args.jobs, address=args.ray_address,
                             gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run,
                             max_retries=args.max_retries)
    spec = load_spec(args.config, variants=args.variants, archs=args.archs, datasets=args.datasets,
                     seeds=args.seeds, steps=args.steps, eval_every=args.eval_every, n_fake=args.n_fake,
                     extractor=args.extractor, data_root=args.data_root, device=args.device,
                     variant_options=per_variant_options(args.variant_option),
                     arch_options=per_name_options(args.arch_option, "--arch-option", "ARCH"),
                     tensorboard=args.tensorboard, metrics=parse_metrics(args.metrics),
                     metric_options=per_name_options(args.metric_option, "--metric-option", "METRIC"),
                     setups=parse_setups(args.setup), select_setups=args.setups,
                     conditions=_conditions(args.conditions, args.condition),
                     condition_options=per_name_options(args.condition_option, "--condition-option", "METHOD"))
    if args.dataset_option:
        options = parse_options(args.dataset_option)
        spec = dataclasses.replace(spec, dataset_options={
            d: {**spec.dataset_options.get(d, {}), **options} for d in spec.datasets})
    board = bench(spec, out=args.out, progress=not args.quiet, inception_weights=args.inception_weights,
                  executor=executor, command=shlex.join(["ganzoo", *args.argv]))
    print(_leaderboard_text(board, args.format, args.out), end="")
    if not board.attrs.get("all_completed"):
        print("ganzoo: some runs failed or diverged; see the status column (rerun to retry failed ones)",
              file=sys.stderr)
        return 1
    return 0


def _add_leaderboard(p):
    p.add_argument("folder", help="report folder written by `ganzoo bench`")
    p.add_argument("--format", default=None, choices=["md", "latex", "csv", "html"],
                   help="the full leaderboard in this format (default: a compact table that fits the terminal)")
    p.add_argument("--output", default=None, help="write to this file instead of printing (default format: md)")
    p.add_argument("--spread", default=None, choices=["sd", "se"],
                   help="what ± shows: sd over seeds or the standard error (default: the benchmark's setting)")


@command("leaderboard", "re-render a benchmark's leaderboard from stored results (no training)")
@arguments(_add_leaderboard)
def run_leaderboard(args) -> int:
    from .files import atomic_write
    from .leaderboard import leaderboard, render

    board = leaderboard(args.folder, spread=args.spread)
    if args.output:  # a file gets a full table, never one fitted to this terminal
        text = render(board, args.format or "md")
        atomic_write(args.output, lambda f: f.write(text), mode="w")
    else:
        print(_leaderboard_text(board, args.format, args.folder), end="")
    return 0


def _conditions(axis: Optional[str], single: Optional[str]) -> Optional[str]:
    if axis is not None and single is not None:
        raise GanzooError("pass --conditions (an axis) or --condition (one method), not both")
    return axis if axis is not None else single


def _leaderboard_text(board, fmt: Optional[str], folder: str) -> str:
    """The full leaderboard in `fmt`, or without one the compact table fitted to the terminal."""
    from .leaderboard import render, render_terminal

    return render(board, fmt) if fmt else render_terminal(board, folder)


def _add_compare(p):
    p.add_argument("a", help="first report folder")
    p.add_argument("b", help="second report folder")
    p.add_argument("--format", default="md", choices=["md", "latex", "csv", "html"])
    p.add_argument("--force", action="store_true", help="show rows even when the protocols differ")


@command("compare", "set two leaderboards side by side: deltas and Welch's t-test over seeds")
@arguments(_add_compare)
def run_compare(args) -> int:
    from .leaderboard import compare, render_comparison

    board = compare(args.a, args.b, force=args.force)
    print(render_comparison(board, args.format, label_a="A", label_b="B"), end="")
    return 0


# ---------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganzoo", description="Train GAN variants side by side and compare them with honest numbers.",
        epilog=textwrap.dedent("""\
            Plugins come from the entry-point group 'ganzoo'; GANZOO_BLOCK_PLUGINS=a,b skips plugins by name.
            Set GANZOO_DEBUG=1 to see tracebacks."""),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ganzoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text, add, run in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(handler=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for reports that say how they were made
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        code = args.handler(args)
        sys.stdout.flush()  # here, not at exit: a reader that closed the pipe is caught below
        return code
    except BrokenPipeError:  # `ganzoo list | head -1`: the reader has what it wanted; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that Python's own flush at exit has nowhere to fail
        return 0
    except DivergedError as exc:
        print(f"ganzoo: error: {escape.error_line(exc)}", file=sys.stderr)
        return 3
    except GanzooError as exc:  # one line, whatever names from plugins or records it quotes
        print(f"ganzoo: error: {escape.error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ganzoo: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: one line by default, the traceback on request
        if debugging():
            raise
        print(f"ganzoo: internal error: {type(exc).__name__}: {escape.error_line(exc)} "
              "(set GANZOO_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
