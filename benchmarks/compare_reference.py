"""Time and measure ssmbench's S4D block against a reference `s4d.py` (state-spaces/s4's standalone S4D).

    python benchmarks/compare_reference.py --reference /tmp/s4d.py [--lengths 1024,4096,16384] [--batch 8]

The reference file is the user's copy (e.g. `git show HEAD:models/s4/s4d.py` of state-spaces/s4); nothing of it
is part of ssmbench. It is loaded by `ssmbench.bench.load_reference` (it imports `einops`: `pip install -e
".[bench]"`). `ssmbench bench --reference` times the same cases on any device; this script adds the
same-function check.

Per length the cases (ssmbench fast path, reference, and with --with-direct ssmbench's straightforward path)
are timed in one process with interleaved rounds (`ssmbench.bench.time_cases`), each block in its native
layout (ssmbench (B, L, H), the reference (B, H, L)); peak memory comes from one step in a fresh subprocess
per case (`ssmbench.bench.peak_memory`). Before timing, the reference's parameters are copied into an ssmbench
block (S4D-Lin, B = 1, exp real part) and both outputs and input gradients are compared: they compute the same
function, so the ratios compare implementations, not models.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ssmbench.bench import (Case, build_block, environment, make_inputs, peak_memory, print_table, step, time_cases,
                            write_json)
from ssmbench.models.s4d import S4D


def ssmbench_from_reference(ref: torch.nn.Module) -> S4D:
    """An ssmbench S4D-Lin block holding the reference block's parameters (kernel C, log_dt, A; D; output conv)."""
    k = ref.kernel
    H, M = k.A_imag.shape
    ours = S4D(H, d_state=2 * M, init="s4d-lin", real_transform="exp")
    with torch.no_grad():
        ours.log_dt.copy_(k.log_dt)
        ours.A_re.copy_(k.log_A_real)  # Re A = -exp(log_A_real) in both
        ours.A_im.copy_(k.A_imag)
        ours.C.copy_(k.C[None])
        ours.D.copy_(ref.D)
        conv = ref.output_linear[0]
        ours.output_linear.weight.copy_(conv.weight[..., 0])
        ours.output_linear.bias.copy_(conv.bias)
    return ours


def check_same_function(reference: str, L: int = 512, batch: int = 2, d_model: int = 64) -> dict[str, float]:
    """Max |difference| of outputs and input gradients: reference block vs ssmbench block with its parameters."""
    case = Case("reference", "reference", L, batch, d_model, options={"reference": reference})
    ref, _ = build_block(case)
    ours = ssmbench_from_reference(ref)
    x, g = make_inputs(case, "BLH")
    y = step(ours, x, g)
    gx = x.grad.clone()
    xr = x.detach().transpose(1, 2).contiguous().requires_grad_()
    yr = step(ref, xr, g.transpose(1, 2).contiguous())
    return {"output": (yr.transpose(1, 2) - y).abs().max().item(), "output_scale": y.abs().max().item(),
            "input_grad": (xr.grad.transpose(1, 2) - gx).abs().max().item()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, help="path of the reference s4d.py")
    p.add_argument("--lengths", default="1024,4096,16384", help="comma-separated sequence lengths")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--d-model", type=int, default=256, help="features H")
    p.add_argument("--d-state", type=int, default=64, help="state size N")
    p.add_argument("--reps", type=int, default=3, help="timed rounds per case (interleaved)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--with-direct", action="store_true", help="also time ssmbench's straightforward path")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--out", default="runs/bench-reference.json",
                   help="JSON file for the results (under runs/, as `ssmbench bench` writes runs/bench.json)")
    a = p.parse_args(argv)
    if not Path(a.reference).is_file():
        p.error(f"--reference {a.reference}: no such file")
    if a.threads:
        torch.set_num_threads(a.threads)
    check = check_same_function(a.reference)
    print(f"same function: max |dy| = {check['output']:.2e} (max |y| {check['output_scale']:.2f}), "
          f"max |dx grad| = {check['input_grad']:.2e}")
    results = []
    for L in [int(t) for t in a.lengths.split(",")]:
        common = dict(L=L, batch=a.batch, d_model=a.d_model, d_state=a.d_state, threads=torch.get_num_threads())
        cases = [Case("s4d", "fast", **common),
                 Case("reference", "reference", **common, options={"reference": a.reference})]
        if a.with_direct:
            cases.append(Case("s4d", "direct", **common))
        print(f"L={L}: timing {', '.join(c.path for c in cases)} ({a.reps} rounds)", flush=True)
        for case, t in zip(cases, time_cases(cases, a.reps)):
            row = {"group": f"L={L}", "block": "ssmbench" if case.block == "s4d" else "reference", "path": case.path,
                   **common, **t, "max_abs_diff": None}
            if not a.no_memory:
                row.update(peak_memory(case))
            results.append(row)
    record = {"environment": environment("cpu", torch.get_num_threads()), "same_function_check": check,
              "config": vars(a), "results": results}
    print_table(record)
    for L in sorted({r["L"] for r in results}):
        ours, ref = (next(r for r in results if r["L"] == L and r["path"] == p) for p in ("fast", "reference"))
        mem = (f", peak memory ratio reference/ssmbench {ref['peak_bytes'] / ours['peak_bytes']:.2f}"
               if ours.get("peak_bytes") and ref.get("peak_bytes") else "")
        print(f"L={L}: time ratio reference/ssmbench {ref['median_s'] / ours['median_s']:.2f} (median), "
              f"{ref['min_s'] / ours['min_s']:.2f} (min){mem}")
    write_json(record, Path(a.out))
    print(f"wrote {a.out}")
    return record


if __name__ == "__main__":
    main()
