"""Batches handed to the training step already on its device, the next one's copy overlapping the current step.

On CUDA, `prefetch` takes batch i+1 from the DataLoader (pinned host memory, `pin_memory=True`) and queues its
host->device copy (non_blocking) on a side stream before it hands out batch i, so the copy runs while the GPU
works on step i. The step's stream waits for the copy's event before it uses the batch, and the batch's memory
is recorded on that stream (`record_stream`), so the allocator does not reuse it while the step still reads it.
Elsewhere (the CPU) the batches pass through unchanged. Either way the batches, their order and the DataLoader's
own behaviour are those of iterating the DataLoader directly (one batch is taken ahead).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch

Batch = tuple[torch.Tensor, ...]


def prefetch(batches: Iterable[Batch], device: torch.device) -> Iterator[Batch]:
    """The batches of `batches`, on `device` (see the module docstring)."""
    if device.type != "cuda":
        yield from batches
        return
    stream = torch.cuda.Stream(device)

    def start(batch: Batch | None) -> tuple[Batch, torch.cuda.Event] | None:
        if batch is None:
            return None
        with torch.cuda.stream(stream):
            moved = tuple(t.to(device, non_blocking=True) for t in batch)
            done = torch.cuda.Event()
            done.record(stream)
        return moved, done

    it = iter(batches)
    ahead = start(next(it, None))
    while ahead is not None:
        batch, done = ahead
        ahead = start(next(it, None))  # queue the next copy before this batch's step
        main = torch.cuda.current_stream(device)
        main.wait_event(done)
        for t in batch:
            t.record_stream(main)
        yield batch
