"""The training loop: one loop for every variant and architecture, readable top to bottom.

Reference recipe: alternate one discriminator step and one generator step, Adam with lr 2e-4 and betas
(0.5, 0.999), batch 64, standard normal latents of size 100, images scaled to [-1, 1]. A variant may bring its
own recipe (critic steps, optimizer; specs.Recipe), which resolve() writes into the run's config unless the user
set a field. A variant plugin supplies the losses and, where it needs them, penalties and hooks that plug into
named places of the loop below (specs.VariantSpec); an architecture plugin supplies only the two networks.
Speed settings (TrainConfig precision, adam, compile, channels_last, threads) change how the steps run; only
precision="bf16" changes what they compute beyond float rounding.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import torch

from . import __version__, augment, checkpoint, conditioning, locks, registry
from .config import TrainConfig
from .data import load_split, resolve_root, training_subset
from .devices import resolve_device
from .errors import DivergedError, GanzooError, debugging
from .files import atomic_write, read_json, write_json
from .runs import (CHECKPOINT_FILE, CONFIG_FILE, GRID_FILE, LOG_COLUMNS, LOG_FILE, RUN_FILES, STATUS_FILE, Run,
                   open_run, resumable_rows)
from .sampling import generate, grid_count, grid_labels, save_grid
from .specs import GENERATOR_STEP_ARGUMENTS, Recipe, VariantSpec
from .steps import Declared, Discriminate, GeneratorLoss
from .unrolling import lookahead
from .tensorboard import TensorBoardLog, require_tensorboard

LOG_FLUSH_EVERY = 100  # steps between moving logged values off the device (one sync instead of one per step)
GRID_SIZE = 64
GRID_SEED = 1234  # the same latent vectors for every run, so grids can be compared side by side


def default_out(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.variant}-{config.arch}-{config.dataset}-seed{config.seed}"


def train(config: Optional[TrainConfig] = None, *, out: Optional[Path | str] = None, overwrite: bool = False,
          progress: bool = True, **settings: Any) -> Run:
    """Train one GAN and return its Run (path, config, status, final stats).

    Either pass a TrainConfig or its fields as keywords: ``ganzoo.train(variant="lsgan", steps=2000)``.
    If `out` already holds this same run unfinished, training resumes from its checkpoint; if it holds this
    run finished, the stored run is returned; if it holds a different run, that is an error unless overwrite.
    """
    if config is None:
        config = TrainConfig.from_dict(settings)
    elif settings:
        raise GanzooError("pass either a TrainConfig or settings as keywords, not both")
    config = resolve(config)
    with _cpu_threads(config.threads), _flush_denormals(), contextlib.ExitStack() as held:
        return _train(config, out, overwrite, progress, held)


def resolve(config: TrainConfig) -> TrainConfig:
    """The config a run trains with: the variant's recipe wherever the user left a field at None, and the
    variant's and architecture's options as their plugins parse them (defaults filled in). Its key names the
    run; resolving a resolved config changes nothing."""
    variant_entry, arch_entry = registry.get("variant", config.variant), registry.get("architecture", config.arch)
    variant = registry.configure("variant", variant_entry.spec, config.variant_options)
    registry.configure("architecture", arch_entry.spec, config.arch_options)
    condition_options = config.condition_options
    if config.condition != conditioning.NONE:  # the method's options as it parses them, defaults filled in
        condition_entry = registry.get("condition", config.condition)
        registry.configure("condition", condition_entry.spec, config.condition_options)
        condition_options = registry.option_values("condition", condition_entry.spec, config.condition_options)
    augment_options = {}
    if config.augment:
        augment_entry = registry.get("augmentation", config.augment)
        registry.configure("augmentation", augment_entry.spec, config.augment_options)
        augment_options = registry.option_values("augmentation", augment_entry.spec, config.augment_options)
    recipe = variant.recipe
    optimizer = config.optimizer or recipe.optimizer
    betas = config.betas
    if optimizer == "adam" and betas is None:  # the variant's betas are for its own optimizer only
        betas = recipe.betas if recipe.optimizer == "adam" else Recipe().betas
    return dataclasses.replace(
        config, optimizer=optimizer, betas=betas,
        lr=config.lr if config.lr is not None else recipe.lr,
        d_steps=config.d_steps if config.d_steps is not None else recipe.d_steps,
        variant_options=registry.option_values("variant", variant_entry.spec, config.variant_options),
        arch_options=registry.option_values("architecture", arch_entry.spec, config.arch_options),
        condition_options=condition_options, augment_options=augment_options)


def _train(config: TrainConfig, out: Optional[Path | str], overwrite: bool, progress: bool,
           held: contextlib.ExitStack) -> Run:
    variant = registry.variant(config.variant, config.variant_options)
    arch = registry.get("architecture", config.arch)
    arch_spec = registry.configure("architecture", arch.spec, config.arch_options)
    dataset_entry = registry.get("dataset", config.dataset)
    dataset = registry.configure_dataset(dataset_entry.spec, config.dataset_options)  # options fix its shape
    check_architecture_fits(config, arch_spec, dataset)
    conditioning.check_condition(config, arch_spec, dataset)
    condition = conditioning.condition_spec(config)  # None: unconditional
    augment_spec = augment.configured(config.augment, config.augment_options) if config.augment else None
    if augment_spec is not None:
        augment.warn(augment.check_fits(config.augment, augment_spec, dataset, config.dataset))
    device = resolve_device(config.device)
    out = Path(out) if out is not None else default_out(config)
    held.enter_context(locks.hold(out, "run folder"))  # until train() returns: one writer per run folder
    existing = _prepare_folder(out, config, overwrite)
    if existing is not None and existing.status == "completed":
        return existing

    # ---- data: the whole split as uint8 on the training device; batches are drawn by index ----
    data = load_split(config.dataset, dataset.train_split, config.data_root, config.download, config.dataset_options)
    samples_per_step = config.batch_size * config.pack  # real (and generated) samples per discriminator step
    if config.train_subset:  # limited data: N images of the split, the same for every seed
        data, _ = training_subset(data, config.train_subset, config.dataset, samples_per_step)
    images = data.images.to(device)
    n_images = len(images)
    labels, counts = None, None  # a conditional run's real labels (on the device) and class counts
    if condition is not None:
        if data.labels is None or len(data.labels) != n_images:
            raise GanzooError(f"--condition {config.condition}: dataset '{config.dataset}' split "
                              f"'{dataset.train_split}' has no labels for its samples")
        labels = data.labels.long().to(device)
        counts = conditioning.class_counts(data.labels, dataset.num_classes)
    if n_images < samples_per_step:
        packs = f" x pack {config.pack}" if config.pack > 1 else ""
        raise GanzooError(f"batch size {config.batch_size}{packs} is larger than the {n_images} training "
                          f"{'images' if dataset.shape.kind == 'image' else 'samples'}")

    # ---- models and optimisers; the seed fixes their initial weights ----
    # Packing (PacGAN) changes only D's input: packs of m samples, m times the channels (or features). A conditioning
    # method wraps the architecture's networks (G(z, y), D(x, y)); unconditional runs get them as built.
    torch.manual_seed(config.seed)
    G = conditioning.build_generator(config, arch_spec, dataset.shape, dataset.num_classes).to(device)
    D = conditioning.build_discriminator(config, arch_spec, dataset.shape, dataset.num_classes).to(device)
    _check_batches(config, G, D)
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    if config.channels_last:  # changes only 4-d (conv) weights; linear layers are left as they are
        G.to(memory_format=layout)
        D.to(memory_format=layout)
    opt_g, opt_d = _optimizer(G, config, device), _optimizer(D, config, device)
    G_ema = copy.deepcopy(G).requires_grad_(False) if config.ema else None  # what evaluation sees (see _EMA)
    noise = torch.Generator(device=device).manual_seed(config.seed)
    # The variant's own state (specs.VariantSpec.state), on the device; checkpointed with everything else.
    state = {name: torch.as_tensor(value, dtype=torch.float32).clone().to(device)
             for name, value in variant.state.items()}
    # The augmentation of everything D sees (None: none), its state (ADA's p) and its own random generator, all
    # checkpointed; steps.Discriminate applies it.
    augmentation = (augment.Augmentation(config.augment, augment_spec, device, config.seed)
                    if augment_spec is not None else None)

    # ---- speed: what the steps call. G and D keep the weights (checkpoints, evaluation); torch.compile wraps
    #      them, and under bf16 the forward passes run in autocast while weights, Adam and losses stay float32.
    G_fwd, D_fwd = G, D
    if config.compile != "off":
        mode = None if config.compile == "default" else config.compile
        G_fwd, D_fwd = torch.compile(G, mode=mode), torch.compile(D, mode=mode)
    autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16,
                                 enabled=config.precision == "bf16")

    start_step, wall_before = 0, 0.0
    resolved = {
        "config": config.to_dict(),
        "key": config.key(),
        "resolved": {
            "device": str(device),
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "variant": {"name": variant.name, "plugin": registry.get("variant", config.variant).plugin,
                        "origin": registry.get("variant", config.variant).origin,
                        "recipe": dataclasses.asdict(variant.recipe), "options": config.variant_options,
                        "penalties": [{"name": p.name, "weight": p.weight, "every": p.every}
                                      for p in variant.penalties],
                        "equilibrium": variant.equilibrium},
            "arch": {"name": config.arch, "plugin": arch.plugin, "origin": arch.origin,
                     "options": config.arch_options},
            "dataset": {"name": config.dataset, "plugin": dataset_entry.plugin, "origin": dataset_entry.origin,
                        "shape": _shape_record(dataset.shape),
                        "num_classes": dataset.num_classes, "train_split": dataset.train_split,
                        "reference_split": dataset.reference_split, "train_images": n_images,
                        "options": config.dataset_options, "data_root": resolve_root(config.data_root),
                        "source": dataset.source,
                        "info": data.info},
            "versions": _versions(),
            **({"augment": {"name": config.augment, "plugin": registry.get("augmentation", config.augment).plugin,
                            "origin": registry.get("augmentation", config.augment).origin,
                            "description": augment_spec.description, "options": config.augment_options}}
               if augment_spec is not None else {}),
        },
    }
    if condition is not None:
        entry = registry.get("condition", config.condition)
        resolved["resolved"]["condition"] = {
            "name": condition.name, "plugin": entry.plugin, "origin": entry.origin, "options": config.condition_options,
            "paper": condition.paper, "generator": conditioning.describe(G), "discriminator": conditioning.describe(D),
            "terms": {"discriminator": [{"name": t.name, "weight": t.weight} for t in condition.discriminator_terms],
                      "generator": [{"name": t.name, "weight": t.weight} for t in condition.generator_terms]},
            **condition.record, "fake_labels": config.fake_labels, "num_classes": dataset.num_classes,
            "class_counts": counts}
    if existing is not None and (out / CHECKPOINT_FILE).is_file():
        saved = _resume_state(out / CHECKPOINT_FILE, existing)
        checkpoint.load_state(G, saved["generator"], out / CHECKPOINT_FILE, "generator")
        checkpoint.load_state(D, saved["discriminator"], out / CHECKPOINT_FILE, "discriminator")
        if G_ema is not None:
            checkpoint.load_state(G_ema, saved["generator_ema"], out / CHECKPOINT_FILE, "generator_ema")
        opt_g.load_state_dict(_with_kernel(saved["opt_g"], config))
        opt_d.load_state_dict(_with_kernel(saved["opt_d"], config))
        noise.set_state(saved["noise_rng"])
        _restore_variant_state(state, saved.get("variant_state", {}), out / CHECKPOINT_FILE)
        if augmentation is not None:
            augmentation.load_state_dict(saved.get("augmentation"), out / CHECKPOINT_FILE)
        start_step, wall_before = int(saved["step"]), float(saved["wall_time_s"])
    else:
        write_json(out / CONFIG_FILE, resolved)
    evaluator = None
    if config.tensorboard:
        require_tensorboard()
    if config.eval_every:  # prepared before the first step: a missing weights file fails now, not at step K
        from .evaluation import TrainingEvaluator

        evaluator = TrainingEvaluator(config, out, device, keep_until=start_step, class_counts=counts)
    log = _LogWriter(out / LOG_FILE, keep_until=start_step, columns=_log_columns(variant, condition, augmentation))
    _write_status(out, "running", start_step, config)

    batch_of_real_images = _EpochBatches(images, samples_per_step, config.seed, layout, labels)
    # The classes G is asked for (conditional runs): drawn from the run's noise generator, so fixed by the seed.
    draw_labels = conditioning.LabelSampler(config.fake_labels, counts, device) if condition is not None else None

    def generate_batch(z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """G's samples for these latents. With packing, G makes them in `pack` batches of batch_size (BatchNorm
        statistics per batch, as the PacGAN code does) and sample i of batch k goes to pack i, position k."""
        with autocast():
            if y is not None:  # conditional (never packed: check_condition refuses it)
                return G_fwd(z, y)
            if config.pack == 1:
                return G_fwd(z)
            parts = [G_fwd(chunk) for chunk in z.chunk(config.pack)]
            return torch.stack(parts, dim=1).flatten(0, 1)

    # How every piece asks D about samples: one place that prepares D's input (the augmentation of each sample,
    # packs of config.pack samples) and runs D. Gradient penalties and look-aheads differentiate through D twice,
    # which torch.compile does not support: they get the uncompiled D (same weights, same augmentation).
    discriminate = Discriminate(D, D_fwd, config.pack, autocast, conditional=condition is not None,
                                augment=augmentation)
    # What penalties, hooks and the generator's loss may ask for by name (specs.STEP_ARGUMENTS and
    # specs.GENERATOR_STEP_ARGUMENTS); each receives only what it declares.
    step_arguments: dict[str, Any] = {"discriminate": discriminate.uncompiled(), "discriminator": D, "generator": G,
                                      "rng": noise, "state": state, "d_optimizer": opt_d, "real_labels": None,
                                      "fake_labels": None}
    tensorboard = TensorBoardLog(out, start_step) if config.tensorboard else None
    # The variant's penalties, then the conditioning method's D terms (ACGAN's class cross-entropy): both are weighted
    # terms of D's objective, logged unweighted in their own columns. The method's G terms join G's loss likewise.
    d_terms = variant.penalties + (condition.discriminator_terms if condition is not None else ())
    penalties = [(penalty, Declared(penalty.compute)) for penalty in d_terms]
    g_terms = [(term, Declared(term.compute, GENERATOR_STEP_ARGUMENTS))
               for term in (condition.generator_terms if condition is not None else ())]
    after_d_step = Declared(variant.after_discriminator_step)
    after_g_step = Declared(variant.after_generator_step)
    generator_loss = GeneratorLoss(variant.generator_loss, variant.generator_needs_real)
    not_applied = torch.tensor(float("nan"), device=device)  # a lazy penalty's column on the steps it skips

    def discriminator_objective(judge: Discriminate, real_x: torch.Tensor, fake_x: torch.Tensor,
                                arguments: dict[str, Any]):
        """D's loss on a real and a generated batch plus its weighted penalties: one objective, so one backward
        pass. `judge` is D (or, in a look-ahead, a copy of it). Returns (objective, penalty values, real, fake)."""
        real, fake = judge(real_x, arguments["real_labels"]), judge(fake_x, arguments["fake_labels"])
        objective = variant.discriminator_loss(real, fake)
        # a penalty's own D calls score under the real labels (conditional runs), unless it passes others
        arguments.update(discriminate=judge.uncompiled().given(arguments["real_labels"]), real_images=real_x,
                         fake_images=fake_x, real=real, fake=fake)
        values = []
        for penalty, compute in penalties:
            if arguments["d_step"] % penalty.every:  # lazy: skipped on this step
                values.append(not_applied)
                continue
            owner = (f"variant '{variant.name}' penalty" if penalty in variant.penalties
                     else f"conditioning '{config.condition}' term")
            value = _scalar(compute(arguments), f"{owner} '{penalty.name}'")
            objective = objective + (penalty.weight * penalty.every) * value
            values.append(value.detach().float())
        return objective, values, real, fake

    def generator_objective(arguments: dict[str, Any]):
        """G's loss (the variant's) plus the conditioning method's weighted G terms (ACGAN's class cross-entropy):
        one objective, one backward pass. Returns (objective, the terms' unweighted values for the log)."""
        objective, values = generator_loss(arguments), []
        for term, compute in g_terms:
            if arguments["step"] % term.every:
                values.append(not_applied)
                continue
            value = _scalar(compute(arguments), f"conditioning '{config.condition}' term '{term.name}'")
            objective = objective + (term.weight * term.every) * value
            values.append(value.detach().float())
        return objective, values

    def generator_judge(real_x: torch.Tensor, fake_x: torch.Tensor) -> Discriminate:
        """Whom G's loss asks: D as it is now, or (Unrolled GAN, config.unroll = k) a copy of D advanced k optimizer
        steps on this batch, with G's gradient flowing back through those steps. D itself is not changed."""
        if not config.unroll:
            return discriminate
        arguments = {**step_arguments, "state": {k: v.clone() for k, v in state.items()}}  # the copy's, discarded

        def objective(judge: Discriminate) -> torch.Tensor:
            return discriminator_objective(judge, real_x, fake_x, arguments)[0]

        return lookahead(discriminate.uncompiled(), opt_d, objective, config.unroll)

    bar = _progress_bar(config, start_step, progress)
    started = time.perf_counter()
    pending: list[torch.Tensor] = []  # per-step stats, still on the device
    pending_times: list[float] = []
    G.train()
    D.train()
    step = start_step
    try:
        for step in range(start_step, config.steps):
            if config.compile != "off":
                torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs may reuse last step's output buffers now
            # 1) Discriminator: real batch against a generated batch, d_steps times. The last fake batch keeps
            #    its graph so that the generator step can reuse it instead of generating again. The variant's
            #    loss and its penalties make one objective and one backward pass.
            for k in range(config.d_steps):
                d_step = step * config.d_steps + k
                real_x, real_y = batch_of_real_images(d_step)  # real_y: the batch's labels (None: unconditional)
                z = torch.randn(samples_per_step, config.latent_dim, device=device, generator=noise)
                fake_y = draw_labels(samples_per_step, noise) if draw_labels is not None else None
                last = k == config.d_steps - 1
                with torch.set_grad_enabled(last):
                    fake_x = generate_batch(z, fake_y)
                step_arguments.update(step=step, d_step=d_step, real_labels=real_y, fake_labels=fake_y)
                d_loss, penalty_values, real, _ = discriminator_objective(discriminate, real_x, fake_x.detach(),
                                                                           step_arguments)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                with torch.no_grad():
                    after_d_step(step_arguments)
                    if augmentation is not None:  # ADA steers p by how sure D is of the (augmented) reals
                        augmentation.after_discriminator_step({**step_arguments, "real_signs": torch.sign(
                            variant.d_value(real.logits) - (variant.equilibrium or 0.0))})
            with torch.no_grad():  # D(x) for the log, taken now: a CUDA graph may reuse its output buffer later
                d_real = variant.d_value(real.logits.detach()).mean()

            # 2) Generator: score the same fake batch with the updated discriminator (or its look-ahead copy). D's
            #    weights are frozen here so backward computes no gradients for them (only through them, to G).
            D.requires_grad_(False)
            judge = generator_judge(real_x, fake_x)
            if judge is not discriminate:
                # D itself still sees the batch, for the log and so that its BatchNorm statistics and spectral norm
                # iterations move exactly as without unrolling (then D's updates are the same too).
                with torch.no_grad():
                    logged = discriminate(fake_x, fake_y)
                    if generator_loss.needs_real:
                        discriminate(real_x, real_y)
            fake = judge(fake_x, fake_y)
            with torch.no_grad():  # D(G(z)) for the log, by the updated D (not a look-ahead copy)
                d_fake = variant.d_value((fake if judge is discriminate else logged).logits.detach()).mean()
            real_now = None
            if generator_loss.needs_real:
                with torch.no_grad():
                    real_now = judge(real_x, real_y)
            g_arguments = {**step_arguments, "fake": fake, "real": real_now, "fake_images": fake_x,
                           "real_images": real_x, "discriminate": judge.uncompiled().given(fake_y)}
            g_loss, g_term_values = generator_objective(g_arguments)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            D.requires_grad_(True)
            with torch.no_grad():
                after_g_step(step_arguments)
                if G_ema is not None:
                    _update_ema(G_ema, G, 0.0 if step < config.ema_start else config.ema)

            # 3) Bookkeeping, kept on the device until the next flush.
            with torch.no_grad():
                pending.append(torch.stack([d_loss.detach(), g_loss.detach(), d_real, d_fake, *penalty_values,
                                            *g_term_values,
                                            *(augmentation.logged() if augmentation is not None else ())]).float())
            pending_times.append(wall_before + time.perf_counter() - started)
            done = step + 1
            evaluate_now = evaluator is not None and (done % config.eval_every == 0 or done == config.steps)
            if len(pending) >= LOG_FLUSH_EVERY or done == config.steps or done % config.checkpoint_every == 0 \
                    or evaluate_now:
                rows = torch.stack(pending).cpu()
                first = done - len(pending) + 1  # step number of rows[0]
                bad = _first_nonfinite(rows[:, :4])  # a penalty that went bad makes d_loss bad too
                if bad is not None:
                    last_step = first + bad
                    log.append(first, rows[:bad + 1], pending_times[:bad + 1])
                    log.close()
                    which = [c for c, v in zip(LOG_COLUMNS[1:5], rows[bad].tolist()) if not _finite(v)]
                    message = f"training diverged at step {last_step}: {', '.join(which)} not finite"
                    _write_status(out, "diverged", last_step, config, error=message)
                    bar.close()
                    raise DivergedError(f"{message}; the log up to that step is in {out / LOG_FILE}")
                log.append(first, rows, pending_times)
                pending, pending_times = [], []
                images_per_s = (done - start_step) * config.batch_size * config.pack / (time.perf_counter() - started)
                if tensorboard is not None:
                    tensorboard.steps(first, rows, log.columns[1:-1], images_per_s)
                bar.update(done - bar.n)
                bar.set_postfix(d_loss=f"{rows[-1, 0]:.3f}", g_loss=f"{rows[-1, 1]:.3f}", img_s=f"{images_per_s:.0f}")
                if evaluate_now:  # before the checkpoint: a resume drops rows past it and scores that step again
                    evaluation_started = time.perf_counter()
                    evaluated = _plain(G_ema or G, config)
                    evaluator(evaluated, done)
                    if tensorboard is not None:
                        pictured = grid_count(evaluated, dataset.shape, GRID_SIZE)  # conditional: a row per class
                        tensorboard.evaluation(done, evaluator.last, generate(
                            evaluated, pictured, config.latent_dim, GRID_SEED, labels=grid_labels(evaluated, pictured)),
                            real=images[:20_000].cpu() if images.dim() == 2 else None)
                    started += time.perf_counter() - evaluation_started  # the clock leaves evaluation out
                if done % config.checkpoint_every == 0 or done == config.steps:
                    if tensorboard is not None:
                        tensorboard.flush()  # what the checkpoint covers is on disk before it
                    wall = wall_before + time.perf_counter() - started
                    log.sync()
                    sha = checkpoint.save(out / CHECKPOINT_FILE, {
                        "config": config.to_dict(), "step": done, "wall_time_s": wall,
                        "generator": G.state_dict(), "discriminator": D.state_dict(),
                        "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "noise_rng": noise.get_state(),
                        **({"variant_state": _saved_variant_state(state, variant.name)} if state else {}),
                        **({"generator_ema": G_ema.state_dict()} if G_ema is not None else {}),
                        **({"augmentation": augmentation.state_dict()} if augmentation is not None else {}),
                    })
                    _write_status(out, "running", done, config, checkpoint_sha256=sha, wall_time_s=wall)
    except (DivergedError, KeyboardInterrupt):
        raise
    except Exception as exc:
        # A plugin's loss, penalty or hook that raises (or a penalty that returns no scalar) fails the run where
        # it stands: run.json says so and why, instead of "running"; the checkpoint on disk still resumes it.
        bar.close()
        log.close()
        if isinstance(exc, GanzooError):
            message = str(exc)
        else:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            message = f"{type(exc).__name__}: {exc}".splitlines()[0] + f" (at {Path(frame.filename).name}:{frame.lineno})"
        message = f"step {step + 1}: {message}"
        _write_status(out, "failed", step, config, error=message)
        if debugging() or isinstance(exc, GanzooError):
            raise
        raise GanzooError(f"training failed at {message}; {out / STATUS_FILE} records it") from exc
    finally:
        if tensorboard is not None:
            tensorboard.close()
    bar.close()
    log.close()

    # ---- finish: a sample grid from fixed noise and the final status ----
    wall = wall_before + time.perf_counter() - started
    # a conditional run's grid has one row per class (row k asked for class k)
    pictured = _plain(G_ema or G, config)
    n_pictured = grid_count(pictured, dataset.shape, GRID_SIZE)
    figure_samples = generate(pictured, n_pictured, config.latent_dim, GRID_SEED,
                              labels=grid_labels(pictured, n_pictured))
    save_grid(figure_samples, out / GRID_FILE, nrow=8, real=images[:20_000].cpu() if images.dim() == 2 else None)
    status = read_json(out / STATUS_FILE, "run status")
    final = _final_stats(out / LOG_FILE)
    trained_steps = config.steps - start_step
    # The overfitting signal: what D makes of its training images against held-out real ones, unaugmented.
    reference = load_split(config.dataset, dataset.reference_split, config.data_root, config.download,
                           config.dataset_options)
    held_out_labels = reference.labels.long().to(device) if labels is not None else None  # a conditional D's y
    overfitting = overfitting_signal(discriminate.plain(), variant, images, reference.images.to(device),
                                     samples_per_step, config.seed, labels, held_out_labels)
    _write_status(out, "completed", config.steps, config, checkpoint_sha256=status.get("checkpoint_sha256"),
                  wall_time_s=wall, **_throughput(config, wall),
                  steps_this_session=trained_steps, final=final, **(evaluator.summary() if evaluator else {}),
                  **({"overfitting": overfitting} if overfitting else {}))
    return open_run(out)


# ----------------------------------------------------------------------------------------------------------
# helpers


def _resume_state(path: Path, existing: Run) -> dict:
    """The checkpoint to resume from, checked against the hash run.json recorded for it.

    A process killed between writing a checkpoint (atomically) and recording its hash leaves a newer, complete
    checkpoint with an older hash on record; that one is accepted. Anything else that fails the check is not.
    """
    try:
        return checkpoint.load(path, existing.stats.get("checkpoint_sha256"))
    except GanzooError:
        state = checkpoint.load(path)
        if int(state["step"]) <= existing.step:
            raise
        return state


def _throughput(config: TrainConfig, wall: float) -> dict[str, float]:
    """Images per second: generated ones (one batch per generator step: what a reader compares across variants)
    and the real ones D sees (d_steps batches per step; WGAN's 5 critic steps make it 5 times larger)."""
    generated = config.steps * config.batch_size * config.pack / max(wall, 1e-9)  # packing: pack x batch a step
    return {"g_images_per_s": generated, "d_images_per_s": generated * config.d_steps}


def _cpu_threads(n: int):
    """Train with n CPU threads (0: leave torch's setting alone), restoring the caller's setting afterwards."""
    if not n:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def threads():
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    return threads()


@contextlib.contextmanager
def _flush_denormals():
    """Treat subnormal floats as zero on the CPU while training. A clipped critic's tiny weights and RMSprop's
    squared gradients drift into the subnormal range, where CPU arithmetic is ~10x slower (WGAN on the MLP:
    150 steps in 108 s, 12 s flushed); the values lost are below 1e-38. torch has no getter for the setting:
    it goes back to torch's default (off) afterwards."""
    supported = torch.set_flush_denormal(True)  # False where the CPU cannot (then nothing changes)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


def _kernel(config: TrainConfig) -> dict[str, Any]:
    """The optimizer's implementation flags for config.adam. All three compute the same update; fused and
    foreach differ from the for-loop only by float rounding (fused: one pass over the weights, not several).
    RMSprop has no fused kernel: there, fused means foreach."""
    if config.optimizer == "rmsprop":
        return {"foreach": config.adam != "for-loop"}
    return {"fused": {"fused": True, "foreach": None}, "foreach": {"fused": None, "foreach": True},
            "for-loop": {"fused": None, "foreach": False}}[config.adam]


def _optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    try:
        if config.optimizer == "rmsprop":
            return torch.optim.RMSprop(model.parameters(), lr=config.lr, **_kernel(config))
        return torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas, **_kernel(config))
    except RuntimeError as exc:  # e.g. no fused kernel for this device type
        raise GanzooError(f"adam={config.adam} is not available on device {device}: {str(exc).splitlines()[0]}; "
                          "try --adam foreach or --adam for-loop") from None


def _with_kernel(saved: dict, config: TrainConfig) -> dict:
    """An optimizer state dict whose groups ask for this run's kernel: load_state_dict takes the flags (and
    where the step counters live) from the saved groups, so a resume with another --adam would keep the old one."""
    return {**saved, "param_groups": [{**group, **_kernel(config)} for group in saved["param_groups"]]}


def check_architecture_fits(config: TrainConfig, arch_spec, dataset) -> None:
    """The architecture takes this dataset's kind of samples (images, vectors) and size."""
    kind = dataset.shape.kind
    if kind not in arch_spec.data:
        raise GanzooError(f"architecture '{config.arch}' takes {' and '.join(k + 's' for k in arch_spec.data)}, "
                          f"but dataset '{config.dataset}' has {dataset.shape.describe()}")
    if kind == "image" and arch_spec.image_sizes and dataset.shape.size not in arch_spec.image_sizes:
        raise GanzooError(f"architecture '{config.arch}' supports image sizes {arch_spec.image_sizes}, "
                          f"but dataset '{config.dataset}' has {dataset.shape.size}x{dataset.shape.size}")


def _check_batches(config: TrainConfig, G: torch.nn.Module, D: torch.nn.Module) -> None:
    """Batches every layer can take, checked before the first step: batch norm needs two samples, a
    minibatch-statistics layer whole groups (its check_batch). Both networks take batch_size at a time (D's
    inputs are packs)."""
    for network, n in (("generator", config.batch_size), ("discriminator", config.batch_size)):
        for module in (G if network == "generator" else D).modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and n < 2:
                raise GanzooError(f"architecture '{config.arch}' uses batch norm, which needs a batch size of at "
                                  f"least 2 (its {network} gets {n})")
            problem = module.check_batch(n) if callable(getattr(module, "check_batch", None)) else None
            if problem:
                raise GanzooError(f"architecture '{config.arch}': {problem}")


def _shape_record(shape) -> dict:
    """The sample shape as config.json records it (sampling reads it back to rebuild the generator)."""
    if shape.kind == "vector":
        return {"features": shape.features}
    return {"channels": shape.channels, "size": shape.size}


def _saved_variant_state(state: dict[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
    """The variant's state as the checkpoint stores it; a plugin that put something else in it is told so."""
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise GanzooError(f"variant '{variant}' state '{name}' must stay a tensor, got {type(value).__name__}")
    return {name: value.detach().clone() for name, value in state.items()}


def _restore_variant_state(state: dict[str, torch.Tensor], saved: Any, path: Path) -> None:
    """Put the checkpoint's variant state back, by name: a resumed run continues from the values it had."""
    if not isinstance(saved, dict) or set(saved) != set(state):
        have = sorted(saved) if isinstance(saved, dict) else []
        raise GanzooError(f"checkpoint {path}: the variant's state holds {', '.join(have) or 'nothing'}, but the "
                          f"variant declares {', '.join(sorted(state)) or 'none'}; pass --overwrite to train again")
    for name, value in saved.items():
        if not isinstance(value, torch.Tensor) or value.shape != state[name].shape:
            raise GanzooError(f"checkpoint {path}: the variant's state '{name}' does not fit the variant's "
                              f"declaration (shape {tuple(state[name].shape)})")
        state[name] = value.to(state[name].device, state[name].dtype)


def _scalar(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise GanzooError(f"{what} must return a scalar tensor, got {shape}")
    return value.reshape(())


def _log_columns(variant: VariantSpec, condition=None,
                 augmentation: Optional[augment.Augmentation] = None) -> tuple[str, ...]:
    """log.csv's header: the fixed columns, each penalty's unweighted value (empty on steps a lazy penalty
    skips), a conditioning method's D and G terms likewise, the augmentation's logged state (augment_p,
    augment_r_t for ADA), then the wall clock."""
    terms = (*condition.discriminator_terms, *condition.generator_terms) if condition is not None else ()
    return (*LOG_COLUMNS[:5], *(p.name for p in variant.penalties), *(t.name for t in terms),
            *(augmentation.columns if augmentation is not None else ()), LOG_COLUMNS[-1])


def _update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, decay: float) -> None:
    """G_ema's weights move towards G's: w_ema = decay * w_ema + (1 - decay) * w (decay 0: a copy). BatchNorm's
    running statistics are copied from G rather than averaged, as StyleGAN2-ADA and PyTorch-StudioGAN do: they
    describe G's recent activations, which an average of weights does not have its own of."""
    ema_weights, weights = list(G_ema.parameters()), [w.detach() for w in G.parameters()]
    torch._foreach_lerp_(ema_weights, weights, 1.0 - decay)
    for ema_buffer, buffer in zip(G_ema.buffers(), G.buffers()):
        ema_buffer.copy_(buffer)


def _plain(G: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """G as evaluation and sample grids see it: with contiguous weights, so that scores do not depend on the
    memory layout training used (the same images as `ganzoo eval` gets from the checkpoint)."""
    return copy.deepcopy(G).to(memory_format=torch.contiguous_format) if config.channels_last else G


class _EpochBatches:
    """Real batches drawn by index from the uint8 images on the device, no per-image Python work.

    Epoch e is a permutation seeded by (seed, e), so the batch of any draw can be recomputed: a resumed run
    sees exactly the batches an uninterrupted one would. The last partial batch of an epoch is dropped.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int,
                 layout: torch.memory_format = torch.contiguous_format, labels: Optional[torch.Tensor] = None):
        self.images, self.batch_size, self.seed, self.layout = images, batch_size, seed, layout
        self.labels = labels
        self.per_epoch = len(images) // batch_size
        self.epoch, self.order = -1, None

    def __call__(self, draw: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(the batch, its labels: None when the run is unconditional)."""
        epoch, position = divmod(draw, self.per_epoch)
        if epoch != self.epoch:
            perm = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(
                self.seed * 1_000_003 + epoch))
            self.epoch, self.order = epoch, perm.to(self.images.device)
        idx = self.order[position * self.batch_size:(position + 1) * self.batch_size]
        labels = self.labels[idx] if self.labels is not None else None
        if self.images.dtype != torch.uint8:  # vectors are stored as the floats they are
            return self.images[idx], labels
        batch = self.images[idx].float().div_(127.5).sub_(1.0)  # uint8 [0, 255] -> float [-1, 1]
        return (batch if self.layout == torch.contiguous_format else batch.contiguous(memory_format=self.layout)), labels


class _LogWriter:
    """Appends rows to log.csv; on resume, first drops rows past the checkpoint's step."""

    def __init__(self, path: Path, keep_until: int, columns: tuple[str, ...] = LOG_COLUMNS):
        self.path, self.columns = path, columns
        if keep_until > 0:  # every step up to the checkpoint's, once; later rows are trained again
            kept = resumable_rows(path, keep_until, range(1, keep_until + 1))
            atomic_write(path, lambda f: f.write("".join(kept)), mode="w")
        else:
            path.write_text(",".join(columns) + "\n")
        self.file = open(path, "a")

    def append(self, first_step: int, rows: torch.Tensor, times: list[float]) -> None:
        for n, (values, t) in enumerate(zip(rows.tolist(), times)):
            # a penalty's NaN (after the four fixed values) marks a lazy penalty skipped on this step
            cells = (f"{v:.6g}" if i < 4 or v == v else "" for i, v in enumerate(values))
            self.file.write(f"{first_step + n}," + ",".join(cells) + f",{t:.4f}\n")
        self.file.flush()

    def sync(self) -> None:
        """On disk before a checkpoint names its step: a resume after power loss finds every row it needs."""
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def _finite(v: float) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))


def _first_nonfinite(rows: torch.Tensor) -> Optional[int]:
    bad = (~torch.isfinite(rows)).any(dim=1).nonzero()
    return int(bad[0]) if len(bad) else None


def _final_stats(log_path: Path) -> dict[str, float]:
    """Means over the last 100 logged steps: single-step GAN losses are too noisy to report. An augmentation's
    logged state (ADA's p and r_t) is taken at the last step: where training left it."""
    import pandas as pd

    log = pd.read_csv(log_path)
    tail = log.tail(100)
    final = {c: float(tail[c].mean()) for c in LOG_COLUMNS[1:5]}
    final.update({c: float(log[c].iloc[-1]) for c in log.columns if c.startswith("augment_") and len(log)})
    return final


OVERFITTING_IMAGES = 2000  # at most this many training and as many held-out images


@torch.no_grad()
def overfitting_signal(discriminate: Discriminate, variant: VariantSpec, train_images: torch.Tensor,
                       held_out: torch.Tensor, batch: int, seed: int, train_labels: Optional[torch.Tensor] = None,
                       held_out_labels: Optional[torch.Tensor] = None) -> Optional[dict[str, Any]]:
    """D's mean output (variant.d_value: a probability for BCE-trained Ds, the raw score for critics and least
    squares) on up to OVERFITTING_IMAGES training images and as many held-out real ones (the reference split), and
    the gap between them: the signal ADA's paper plots. A D that memorises its training set scores it higher
    than unseen real images of the same distribution. Measured without augmentation, in batches of a training
    step's size, on a copy of D in training mode (BatchNorm normalises each batch as it did while training; D's
    own running statistics are left alone); a conditional D judges each image under its own label. None when the
    held-out split is smaller than one batch."""
    n = min(len(train_images), len(held_out), OVERFITTING_IMAGES) // batch * batch
    if n == 0:
        return None
    judge = Discriminate(copy.deepcopy(discriminate.module), None, discriminate.pack, discriminate.autocast,
                         conditional=discriminate.conditional)
    g = torch.Generator().manual_seed(seed)

    def mean_output(images: torch.Tensor, labels: Optional[torch.Tensor]) -> float:
        index = torch.randperm(len(images), generator=g)[:n].to(images.device)
        picked = images[index].split(batch)
        picked_labels = labels[index].split(batch) if labels is not None else [None] * len(picked)
        values = []
        for chunk, y in zip(picked, picked_labels):
            x = chunk.float().div(127.5).sub(1.0) if chunk.dtype == torch.uint8 else chunk
            values.append(variant.d_value(judge(x, y).logits))
        return float(torch.cat(values).mean())

    d_train, d_held_out = mean_output(train_images, train_labels), mean_output(held_out, held_out_labels)
    return {"d_train": d_train, "d_heldout": d_held_out, "d_gap": d_train - d_held_out, "images": n}


def _write_status(out: Path, status: str, step: int, config: TrainConfig, **extra: Any) -> None:
    previous = read_json(out / STATUS_FILE, "run status") if (out / STATUS_FILE).is_file() else {}
    record = {k: v for k, v in previous.items() if k in ("checkpoint_sha256", "wall_time_s")}
    record.update(status=status, step=step, steps=config.steps, key=config.key(), **extra)
    write_json(out / STATUS_FILE, record)


def _prepare_folder(out: Path, config: TrainConfig, overwrite: bool) -> Optional[Run]:
    """Refuse to mix two different runs in one folder; return the stored run when it is this same one."""
    if out.exists() and not out.is_dir():
        raise GanzooError(f"output path {out} exists and is not a folder")
    if overwrite and out.is_dir():
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    if (out / CONFIG_FILE).is_file():
        stored = open_run(out)
        old, new = stored.config.identity(), config.identity()
        if old != new:
            differences = ", ".join(f"{k}={old.get(k, getattr(stored.config, k))!r}" for k in sorted({*old, *new})
                                    if old.get(k) != new.get(k))
            raise GanzooError(f"{out} already holds a different run ({differences}); "
                              "choose another --out or pass --overwrite")
        if stored.status == "diverged":
            raise GanzooError(f"{out} holds this run, which diverged at step {stored.step}; "
                              "pass --overwrite to train it again")
        return stored
    if out.is_dir() and any(p.name != locks.LOCK_FILE for p in out.iterdir()) and not overwrite:
        raise GanzooError(f"{out} is not empty and holds no ganzoo run; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return None


def _versions() -> dict[str, str]:
    import torchvision

    return {"ganzoo": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": sys.version.split()[0]}


def _progress_bar(config: TrainConfig, start: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=config.steps, initial=start, disable=not enabled, unit="step", dynamic_ncols=True,
                desc=f"{config.variant}/{config.arch}/{config.dataset} seed {config.seed}", leave=False)
