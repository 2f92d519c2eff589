"""Dataset adapters (registry DATASETS) and `build_data`, which applies the common options."""

from __future__ import annotations

from ssmbench.data.base import Adapter, DataBundle, subsample
from ssmbench.registry import DATASETS


def build_data(cfg) -> DataBundle:
    """Build the adapter named by `cfg.name` and apply `train_fraction` (nested subsets for one split_seed)."""
    adapter: Adapter = DATASETS.get(cfg.name)()
    bundle = adapter.build(cfg, adapter.Options.model_validate(cfg.options))
    bundle.train = subsample(bundle.train, cfg.train_fraction, cfg.split_seed)
    return bundle
