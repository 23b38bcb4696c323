"""The hooks a ganzoo plugin can implement.

A plugin is any importable module (or object) exposed through an entry point in the group ``ganzoo``; it
implements one or more of these hooks with ``@hookimpl``. Each hook takes no arguments and returns a list of
specs (see specs.py), so one plugin may add several things of one kind. Names of hooks start with
``ganzoo_`` so that a misspelt implementation is caught by ``check_pending()`` at start-up.
"""
from __future__ import annotations

import pluggy

PROJECT = "ganzoo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def ganzoo_variants() -> list:
    """Return a list of VariantSpec: GAN objectives (pairs of discriminator and generator losses)."""


@hookspec
def ganzoo_architectures() -> list:
    """Return a list of ArchitectureSpec: generator/discriminator model pairs."""


@hookspec
def ganzoo_datasets() -> list:
    """Return a list of DatasetSpec: image datasets to train on and evaluate against."""


@hookspec
def ganzoo_feature_extractors() -> list:
    """Return a list of ExtractorSpec: feature extractors that IS, FID and KID are computed with."""


@hookspec
def ganzoo_metrics() -> list:
    """Return a list of MetricSpec: ways to score generated samples (IS/FID/KID, mode coverage, ...)."""


@hookspec
def ganzoo_conditionings() -> list:
    """Return a list of ConditionSpec: ways to make G and D class-conditional (concat, projection, ACGAN, ...)."""


@hookspec
def ganzoo_augmentations() -> list:
    """Return a list of AugmentationSpec: differentiable augmentations of what D sees (DiffAugment, ADA, ...)."""
