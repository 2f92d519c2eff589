"""Every Triton kernel specialization the shipped recipes launch, compiled ahead of time for NVIDIA targets.

    python benchmarks/compile_matrix.py                    # sm_75 .. sm_120, exit 1 on a failure
    python benchmarks/compile_matrix.py --targets 90       # one target
    python benchmarks/compile_matrix.py --readme           # also rewrite the table in benchmarks/README.md

The recipes are every file under recipes/ (a sweep file contributes every run of its grid), and `OPTIONS` adds the
kernel options no recipe ships (the bilinear discretization); each S4D model's launches are captured on the CPU for
each target (`ssmbench.models.triton_compile.capture`: the launch options may depend on the compute capability)
and each distinct specialization is compiled for its target with Triton and its bundled ptxas. A compile error,
any register spill, or fewer than 8 resident warps per SM fails the check (`triton_compile.Compiled.problems`).
No GPU is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- compile-matrix:begin -->", "<!-- compile-matrix:end -->"


def recipe_models(root: Path = ROOT / "recipes", sweeps: bool = True) -> dict[str, tuple]:
    """{a recipe or sweep run: (model section, init name)} for every recipe file and (with `sweeps`) every run of
    every sweep file; tune files add nothing (their base recipes are recipe files of their own)."""
    from ssmbench.recipe import load_recipe, read_yaml_mapping
    from ssmbench.smoke import split_files
    from ssmbench.sweep import expand, spec_recipe

    recipes, plans = split_files([root])
    out = {str(path.relative_to(ROOT)): (lambda r: (r.model, r.init.name))(load_recipe(path)) for path in recipes}
    for path in plans if sweeps else ():
        if "grid" in read_yaml_mapping(path):
            for spec in expand(path):
                recipe = spec_recipe(spec)
                out[f"{path.relative_to(ROOT)}:{spec.name}"] = (recipe.model, recipe.init.name)
    return dict(sorted(out.items()))


# S4D configurations the fused kernels support that no shipped recipe launches, held to the same rule: the bilinear
# discretization (its phase rate is an atan2 in float64 in the kernels) at the recipes' state sizes, both directions.
OPTIONS = {f"options: bilinear, d_state {n}, {'bidirectional' if both else 'causal'}": (n, both)
           for n, both in [(32, True), (64, True), (64, False), (128, True)]}


def option_models() -> dict[str, tuple]:
    """{name: (model section, init name)} of `OPTIONS`, as `recipe_models` gives them."""
    from ssmbench.recipe import ModelConfig

    return {name: (ModelConfig(kind="s4d", d_model=64, bidirectional=both,
                               ssm={"d_state": n, "discretization": "bilinear"}), "s4d-lin")
            for name, (n, both) in OPTIONS.items()}


def specializations(models: dict[str, tuple], cc: int = 90) -> dict:
    """{Specialization: [recipes that launch it]} on sm_`cc`, captured once per distinct S4D configuration."""
    from ssmbench.models.triton_compile import capture_recipe

    by_config: dict[str, set] = {}
    found: dict = {}
    for name, (model, init) in models.items():
        key = json.dumps([model.model_dump(mode="json"), init], sort_keys=True)
        if key not in by_config:
            by_config[key] = capture_recipe(model, init, cc)
        for spec in by_config[key]:
            found.setdefault(spec, []).append(name)
    return found


def compile_all(specs: dict, jobs: int | None = None) -> list:
    """`compile_for` of every specialization of every target ({cc: specializations}), in `jobs` processes
    (default: one per CPU)."""
    from ssmbench.models.triton_compile import compile_for

    work = [(spec, cc) for spec in sorted({s for found in specs.values() for s in found}, key=lambda s: s.label())
            for cc in specs if spec in specs[cc]]
    start, results = time.perf_counter(), []
    with ProcessPoolExecutor(jobs or os.cpu_count() or 1) as pool:
        for r in pool.map(compile_for, *zip(*work)):
            results.append(r)
            print(f"[{len(results)}/{len(work)}] {r.spec.label()} sm_{r.cc}: {r.registers} registers, "
                  f"{r.spill_bytes} B spilled, {r.warps_per_sm} warps/SM" + (f"  {r.error}" if r.error else ""),
                  file=sys.stderr, flush=True)
    print(f"{len(work)} compilations in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return results


def launched_by(specs: dict, spec) -> str:
    """The recipes column: how many recipes and sweep runs launch `spec` (on any target), and `OPTIONS` entries."""
    names = {name for found in specs.values() for name in found.get(spec, ())}
    options = sum(name in OPTIONS for name in names)
    count = str(len(names) - options)
    return f"{count} + {options} bilinear" if options else count


def table(results, specs: dict) -> str:
    """Markdown: a row per specialization, a column per target, cells `registers / spill bytes / warps per SM`; `-`
    where the target launches another specialization instead (other warps)."""
    targets = sorted({r.cc for r in results})
    cells: dict = {}
    for r in results:
        cells.setdefault(r.spec, {})[r.cc] = "error" if r.error else f"{r.registers} / {r.spill_bytes} / {r.warps_per_sm}"
    lines = ["| kernel [constexprs] warps | recipes | " + " | ".join(f"sm_{cc}" for cc in targets) + " |",
             "|---|---:|" + "---|" * len(targets)]
    for spec in sorted(cells, key=lambda s: s.label()):
        lines.append(f"| `{spec.label()}` | {launched_by(specs, spec)} | "
                     + " | ".join(cells[spec].get(cc, "-") for cc in targets) + " |")
    return "\n".join(lines)


def write_readme(text: str) -> None:
    readme = README.read_text()
    head, rest = readme.split(BEGIN)
    _, tail = rest.split(END)
    README.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    from ssmbench.models.triton_compile import TARGETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(map(str, TARGETS)), help="compute capabilities, e.g. 80,90")
    parser.add_argument("--readme", action="store_true", help="rewrite the table in benchmarks/README.md")
    parser.add_argument("--jobs", type=int, default=None, help="compiling processes (default: one per CPU)")
    args = parser.parse_args(argv)
    targets = [int(t) for t in args.targets.split(",")]
    models = {**recipe_models(), **option_models()}
    specs = {cc: specializations(models, cc) for cc in targets}
    results = compile_all(specs, args.jobs)
    text = table(results, specs)
    print(text)
    if args.readme:
        write_readme(text)
    problems = [line for r in results for line in r.problems()]
    for line in problems:
        print(f"FAIL {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
