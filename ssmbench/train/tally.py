"""Training metrics and the non-finite guard, kept on the device between the engine's log points.

Reading a CUDA tensor on the host (`.item()`, `int()`, `if tensor:`) waits for the GPU to finish everything
queued, so a training step that reads its loss serializes the CPU's kernel launches and the GPU's work. The
engine therefore adds each step's numbers to a `DeviceTally` with device-side ops only and reads them
(`DeviceTally.read`, one transfer) where it needs them on the host: at evaluation and checkpoints, and after
every step on the CPU, where reading costs nothing.

Per step, with loss l, the rank's counting samples m (share[0]), the global batch size b and the gradient norm g
(None when the GradScaler owns overflow handling, fp16):
    step += 1;  bad = not finite(l) or not finite(g)
    sums += (0, 0, 0) if bad else (l m, correct, b)         loss sum, correct count, samples that count
    bad_steps += bad;  first = (step, 1 if l is bad else 2, l or g) at the first bad step since the last read
`add` returns `bad` as a float 0/1 device tensor: the engine hands it to the fused AdamW as `found_inf`, which
leaves the parameters, the moments and the step count unchanged when it is 1 (the update is dropped on the device).

The step number is a device counter and every update is in place, so `add` can be captured in a CUDA graph
(`train.cuda_graphs`, train/graphs.py): a replay writes into the same tensors, and `read` zeroes them in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Tally:
    """What `DeviceTally.read` returns: the sums since the previous read, on the host."""

    loss_sum: float
    correct: float
    seen: float
    bad_steps: int
    first_bad_step: int | None  # 1-based step of the first non-finite loss or gradient norm since the last read
    first_bad: str | None  # "loss is nan", "gradient norm is inf", ...


class DeviceTally:
    def __init__(self, device: torch.device, step: int = 0):
        """`step`: the number of steps already taken (the next `add` is step + 1)."""
        self.device = device
        f64 = {"dtype": torch.float64, "device": self.device}
        self.step = torch.full((), float(step), **f64)
        self.sums = torch.zeros(3, **f64)  # loss * m, correct, samples that count
        self.bad_steps = torch.zeros((), **f64)
        self.first = torch.zeros(3, **f64)  # step (0 = none), kind (1 loss, 2 gradient norm), value

    def add(self, loss: torch.Tensor, correct: torch.Tensor | None, counted: int, batch: int,
            grad_norm: torch.Tensor | None) -> torch.Tensor:
        """Add one step (device ops only, in place); return its non-finite flag as a float32 0/1 tensor."""
        self.step += 1
        loss = loss.detach().double()
        bad_loss = ~torch.isfinite(loss)
        bad = bad_loss if grad_norm is None else bad_loss | ~torch.isfinite(grad_norm)
        good = (~bad).double()
        correct = torch.zeros_like(loss) if correct is None else correct.double()
        self.sums += torch.stack([torch.where(bad, 0.0, loss * counted), correct * good, good * batch])
        self.bad_steps += bad.double()
        value = loss if grad_norm is None else torch.where(bad_loss, loss, grad_norm.double())
        record = torch.stack([self.step, torch.where(bad_loss, 1.0, 2.0).double(), value])
        self.first.copy_(torch.where(bad & (self.first[0] == 0), record, self.first))
        return bad.float()

    def read(self) -> Tally:
        """Copy the sums to the host (the only synchronization) and start a new tally."""
        loss_sum, correct, seen, bad_steps, step, kind, value = torch.cat(
            [self.sums, self.bad_steps[None], self.first]).tolist()
        for t in (self.sums, self.bad_steps, self.first):
            t.zero_()
        what = None if not step else f"{'loss' if kind == 1 else 'gradient norm'} is {value}"
        return Tally(loss_sum, correct, seen, round(bad_steps), round(step) or None, what)
