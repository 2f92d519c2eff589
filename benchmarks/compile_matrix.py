"""Every Triton kernel specialization the shipped recipes launch, compiled ahead of time for NVIDIA targets.

    python benchmarks/compile_matrix.py                    # sm_75 .. sm_120, exit 1 on a failure
    python benchmarks/compile_matrix.py --targets 90       # one target
    python benchmarks/compile_matrix.py --readme           # also rewrite the table in benchmarks/README.md

The recipes are every file under recipes/ (a sweep file contributes every run of its grid); each S4D model's
launches are captured on the CPU (`ssmbench.models.triton_compile.capture`) and each distinct specialization is
compiled for each target with Triton and its bundled ptxas. A compile error, any register spill, or fewer than 8
resident warps per SM fails the check (`triton_compile.Compiled.problems`). No GPU is needed.
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


def specializations(models: dict[str, tuple]) -> dict:
    """{Specialization: [recipes that launch it]}, captured once per distinct S4D configuration."""
    from ssmbench.models.triton_compile import capture_recipe

    by_config: dict[str, set] = {}
    found: dict = {}
    for name, (model, init) in models.items():
        key = json.dumps([model.model_dump(mode="json"), init], sort_keys=True)
        if key not in by_config:
            by_config[key] = capture_recipe(model, init)
        for spec in by_config[key]:
            found.setdefault(spec, []).append(name)
    return found


def compile_all(specs, targets, jobs: int | None = None) -> list:
    """`compile_for` of every specialization and target, in `jobs` processes (default: one per CPU)."""
    from ssmbench.models.triton_compile import compile_for

    work = [(spec, cc) for spec in sorted(specs, key=lambda s: s.label()) for cc in targets]
    start, results = time.perf_counter(), []
    with ProcessPoolExecutor(jobs or os.cpu_count() or 1) as pool:
        for r in pool.map(compile_for, *zip(*work)):
            results.append(r)
            print(f"[{len(results)}/{len(work)}] {r.spec.label()} sm_{r.cc}: {r.registers} registers, "
                  f"{r.spill_bytes} B spilled, {r.warps_per_sm} warps/SM" + (f"  {r.error}" if r.error else ""),
                  file=sys.stderr, flush=True)
    print(f"{len(work)} compilations in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return results


def table(results, specs: dict) -> str:
    """Markdown: a row per specialization, a column per target, cells `registers / spill bytes / warps per SM`."""
    targets = sorted({r.cc for r in results})
    cells: dict = {}
    for r in results:
        cells.setdefault(r.spec, {})[r.cc] = "error" if r.error else f"{r.registers} / {r.spill_bytes} / {r.warps_per_sm}"
    lines = ["| kernel [constexprs] warps | recipes | " + " | ".join(f"sm_{cc}" for cc in targets) + " |",
             "|---|---:|" + "---|" * len(targets)]
    for spec in sorted(cells, key=lambda s: s.label()):
        lines.append(f"| `{spec.label()}` | {len(specs[spec])} | "
                     + " | ".join(cells[spec].get(cc, "") for cc in targets) + " |")
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
    specs = specializations(recipe_models())
    results = compile_all(specs, targets, args.jobs)
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
