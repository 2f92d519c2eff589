"""Dataset adapters (registry DATASETS) and `build_data`, which applies the common options."""

from __future__ import annotations

from ssmbench.data.base import Adapter, DataBundle, subsample
from ssmbench.registry import DATASETS


def build_data(cfg) -> DataBundle:
    """Build the adapter named by `cfg.name` and apply `train_fraction` (nested subsets for one split_seed);
    with `cfg.download`, first download the adapter's official data if its folder holds no files."""
    adapter: Adapter = DATASETS.get(cfg.name)()
    options = adapter.Options.model_validate(cfg.options)
    if cfg.download:
        from ssmbench.data.download import ensure

        ensure(cfg.name, cfg.root, options)
    bundle = adapter.build(cfg, options)
    bundle.train = subsample(bundle.train, cfg.train_fraction, cfg.split_seed)
    return bundle
