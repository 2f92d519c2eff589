"""GPU only (skipped without CUDA): a training step queues its work without a host-device synchronization."""

from __future__ import annotations

import pytest
import torch

from killpoint import tiny
from ssmbench.train import engine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_step_does_not_synchronize(tmp_path, precision):
    trainer = engine.Trainer(tiny(device="cuda", precision=precision, grad_clip=1.0), tmp_path, log=lambda *_: None,
                             is_writer=False)
    sampler = engine.EpochBatches(len(trainer.data.train), 8, 0, 0)
    batches = iter(engine.loader(trainer.data.train, sampler, 0, trainer.device))
    trainer.train_step(*next(batches))  # warm-up: lazy CUDA initialization, optimizer state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            trainer.train_step(*next(batches))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer.collect()
    assert trainer.progress.step == 4 and trainer.progress.train_seen == 32 and trainer.progress.skipped_steps == 0
