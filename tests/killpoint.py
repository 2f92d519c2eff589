"""Run the ssmbench CLI in this process and kill it at a chosen point (a test helper, not a test module).

    python tests/killpoint.py POINT -- train RECIPE --runs-dir DIR ...

POINT is `none` or KIND:N (KIND:FILE:N for `torn`), the N-th occurrence (1-based) of KIND in this process:

    step          SIGKILL inside the N-th training step, after the backward pass, before the optimizer update
    eval          SIGKILL inside the N-th evaluation (validation or test) after its first batch
    torn:FILE     SIGKILL while writing FILE (last.pt, best.pt, init.pt, results.json, ...) for the N-th time:
                  half of the bytes reach the temp file, as when a kill lands mid-write
    rotated       SIGKILL after the N-th rename last.pt -> prev.pt, before the new last.pt takes its place
    append        SIGKILL while appending the N-th metrics line: half the line reaches metrics.jsonl
    term          send SIGTERM to itself inside the N-th training step (preemption) and carry on
    data          SIGKILL inside the N-th data preparation (`build_data`), before env.json and any checkpoint
    init          SIGKILL inside the N-th initializer (`apply_init`, e.g. the TDI fit), before init.pt

The engine has no test hooks; this wrapper monkeypatches the functions it calls (by module attribute).
The helpers below (`TINY`, `run`, `assert_same_run`) are shared by the tests that kill or preempt training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Seconds per process: 12 steps of a 1-layer, d_model 8 S4D on sequential MNIST, dropout on (so the RNG state
# matters), evaluation every 4 steps, a checkpoint every 2, one CPU thread.
TINY = {
    "name": "tiny", "seed": 3,
    "data": {"name": "smnist", "permute": False, "val_fraction": 0.02},
    "model": {"d_model": 8, "n_layers": 1, "dropout": 0.1, "ssm": {"d_state": 8}},
    "train": {"max_steps": 12, "batch_size": 8, "eval_batch_size": 16, "eval_every": 4, "checkpoint_every": 2,
              "max_eval_batches": 2, "max_test_batches": 2, "threads": 1, "lr": 0.01, "warmup_steps": 2,
              "device": "cpu"},
}
TIMING = ("seconds", "train_seconds", "samples_per_second", "run_dir")  # wall clock and location, not results


@pytest.fixture
def one_thread():
    """Train in the test process on one torch thread (fast on a loaded 2-core machine), then restore the count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**train):
    """The tiny recipe, validated, for training in the test process (torch threads left to conftest.py)."""
    import copy

    from ssmbench.recipe import validate_recipe

    recipe = copy.deepcopy(TINY)
    del recipe["train"]["threads"]
    recipe["train"].update(train)
    return validate_recipe(recipe)


def write_recipe(folder: Path, recipe: dict = TINY) -> Path:
    path = Path(folder) / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run(point: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`ssmbench ARGS` in a fresh Python process in `cwd`, killed at `point` (see the module docstring)."""
    return subprocess.run([sys.executable, __file__, point, "--", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env={**os.environ, "COLUMNS": "200"})


def cli_run(*args: str) -> tuple[int | str, str]:
    """`ssmbench ARGS` through the real entry point `ssmbench.cli.main` in this process: (exit status, output)."""
    import contextlib
    import io

    from ssmbench import cli

    out, argv = io.StringIO(), sys.argv
    sys.argv = ["ssmbench", *args]
    try:
        with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
            cli.main()
        code: int | str = 0
    except SystemExit as e:
        code = e.code if e.code is not None else 0
    finally:
        sys.argv = argv
    return code, out.getvalue()


def run_dir(runs_root: Path) -> Path:
    (only,) = [p for p in Path(runs_root).iterdir() if p.is_dir() and not p.name.startswith(".")]  # not .claims
    return only


def assert_same_run(a: Path, b: Path) -> None:
    """Two run directories hold bit-identical results: metric lines, results.json (timing fields aside) and the
    tensors of best.pt, last.pt and prev.pt (model, and optimizer state for last.pt)."""
    import torch

    from ssmbench import runs
    from ssmbench.train import checkpoint

    def strip(row: dict) -> dict:
        return {k: v for k, v in row.items() if k not in TIMING}

    rows_a, rows_b = runs.read_jsonl(a / runs.METRICS), runs.read_jsonl(b / runs.METRICS)
    assert [strip(r) for r in rows_a] == [strip(r) for r in rows_b]
    assert len(rows_a) == len((a / runs.METRICS).read_text().splitlines())  # no torn or duplicate lines
    assert strip(runs.read_json(a / runs.RESULTS)) == strip(runs.read_json(b / runs.RESULTS))
    for name, keys in (("best.pt", ["model"]), ("last.pt", ["model", "optimizer"]), ("prev.pt", ["model"])):
        sa, sb = checkpoint.load(a / "checkpoints" / name), checkpoint.load(b / "checkpoints" / name)
        for key in keys:
            flat_a, flat_b = flatten(sa[key]), flatten(sb[key])
            assert flat_a.keys() == flat_b.keys(), (name, key)
            for k in flat_a:
                va, vb = flat_a[k], flat_b[k]
                same = torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb
                assert same, f"{name} {key} {k} differs"


def flatten(obj, prefix: str = "") -> dict:
    """Nested dicts/lists -> {dotted path: leaf}."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in flatten(val, f"{prefix}{key}.").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in flatten(val, f"{prefix}{i}.").items()}
    return {prefix: obj}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    import torch

    from ssmbench import runs
    from ssmbench.train import engine

    kind, *rest = point.split(":")
    target = rest[0] if kind == "torn" else None
    n = int(rest[-1])
    count = [0]

    def hit() -> bool:
        count[0] += 1
        return count[0] == n

    if kind in ("step", "term"):
        norm = torch.nn.utils.get_total_norm  # called once per step, right after backward

        def norm_then_signal(*args, **kwargs):
            if hit():
                if kind == "step":
                    die()
                os.kill(os.getpid(), signal.SIGTERM)
            return norm(*args, **kwargs)

        torch.nn.utils.get_total_norm = norm_then_signal
    elif kind in ("data", "init"):
        name = {"data": "build_data", "init": "apply_init"}[kind]
        real = getattr(engine, name)

        def then_die(*args, **kwargs):
            out = real(*args, **kwargs)
            if hit():
                die()
            return out

        setattr(engine, name, then_die)
    elif kind == "eval":
        evaluate = engine.evaluate

        def evaluate_then_die(model, data, *args, **kwargs):
            if not hit():
                return evaluate(model, data, *args, **kwargs)

            def first_batch_only():
                for i, batch in enumerate(data):
                    if i == 1:
                        die()
                    yield batch

            return evaluate(model, first_batch_only(), *args, **kwargs)

        engine.evaluate = evaluate_then_die
    elif kind == "torn":
        write = runs.atomic_write_bytes

        def torn_write(path, data, previous=None):
            path = Path(path)
            if path.name == target and hit():
                tmp = path.with_name(f".{path.name}.{os.getpid()}.torn{runs.TEMP_SUFFIX}")
                with open(tmp, "wb") as f:
                    f.write(data[:len(data) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                die()
            return write(path, data, previous)

        runs.atomic_write_bytes = torn_write
    elif kind == "rotated":
        replace = os.replace

        def replace_then_die(src, dst, *args, **kwargs):
            replace(src, dst, *args, **kwargs)
            if Path(dst).name == "prev.pt" and hit():
                die()

        os.replace = replace_then_die
    elif kind == "append":
        append = runs.append_jsonl

        def torn_append(path, obj):
            if not hit():
                return append(path, obj)
            line = json.dumps(obj) + "\n"
            with open(path, "a", encoding="utf-8") as f:
                f.write(line[:len(line) // 2])
                f.flush()
                os.fsync(f.fileno())
            die()

        runs.append_jsonl = torn_append
    else:
        raise SystemExit(f"killpoint: unknown point {point!r}")


if __name__ == "__main__":
    point, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: killpoint.py POINT -- ARGS..."
    if point != "none":
        install(point)
    from ssmbench.cli import main

    sys.argv = ["ssmbench", *args]
    main()
