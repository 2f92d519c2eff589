"""`make results`: rerun the quick sweeps and rewrite the README's results tables from their run records.

    python -m ssmbench.readme_tables              # train what is missing, copy the records, rewrite README.md
    python -m ssmbench.readme_tables --no-train   # only re-render README.md from the committed records

For every sweep of SWEEPS: (1) `ssmbench sweep recipes/quick/<name>.yaml --runs-dir runs/readme/<name> --jobs 2`
(finished runs are skipped, so a second call trains nothing); (2) the finished records of the sweep's current grid
(older runs in the folder, e.g. of an edited recipe, are left out) replace benchmarks/results/<name>/: each run's
recipe.yaml, results.json, metrics.jsonl and env.json (without the TDI spectrum arrays, which only the figures
use), no checkpoints; (3) the markdown of those records — a line naming the commands, date, machine and versions,
then `ssmbench report`'s tables — replaces the block between `<!-- results:<name> begin -->` and
`<!-- results:<name> end -->` in README.md, and `ssmbench report --runs-csv`'s tidy CSV is written to
benchmarks/results/<name>.csv. tests/test_readme_results.py checks that README.md and the
CSVs are exactly what `render` makes of the committed records, so this script is the only writer of those blocks.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from ssmbench import runs
from ssmbench.report import build_tables
from ssmbench.report.records import read_run, read_runs
from ssmbench.report.tables import tidy_csv, to_markdown

SWEEPS = ["smnist-table", "tdi-data-efficiency", "synthetic-memory"]
RECORDS = Path("benchmarks/results")
RUNS = Path("runs/readme")
README = Path("README.md")
COPIED = (runs.RECIPE, runs.RESULTS, runs.METRICS)


def begin(name: str) -> str:
    return f"<!-- results:{name} begin (written by `make results`; do not edit by hand) -->"


def end(name: str) -> str:
    return f"<!-- results:{name} end -->"


def sweep_command(name: str) -> str:
    return f"ssmbench sweep recipes/quick/{name}.yaml --runs-dir {RUNS / name} --jobs 2"


def copy_records(name: str, runs_dir: Path, records: Path) -> int:
    """Replace `records`/<name>/ with the finished runs of the sweep's grid in `runs_dir`; return how many."""
    from ssmbench.sweep import expand, find_finished, index_runs

    specs = expand(Path("recipes/quick") / f"{name}.yaml", runs_dir)
    index = index_runs(runs_dir)
    out = records / name
    if out.exists():
        shutil.rmtree(out)
    n = 0
    for run_dir in filter(None, (find_finished(s, index) for s in specs)):
        run = read_run(run_dir)
        dest = out / run.run_dir.name
        dest.mkdir(parents=True)
        for f in COPIED:
            if (run.run_dir / f).is_file():
                shutil.copyfile(run.run_dir / f, dest / f)
        env = dict(run.env)
        tdi = (env.get("init") or {}).get("tdi")
        if isinstance(tdi, dict):
            env["init"] = {**env["init"], "tdi": {k: v for k, v in tdi.items() if not k.endswith("spectrum")
                                                  and not k.startswith("model_spectrum")}}
        runs.atomic_write_json(dest / runs.ENV, env)
        n += 1
    return n


def provenance_line(name: str, records_dir: Path) -> str:
    """Which commands made the table, when, on what machine, with which versions (from the records' env.json)."""
    records = [r for r in read_runs([records_dir]) if r.finished]
    envs = [r.env for r in records]

    def one(key: str) -> str:
        values = sorted({str(e.get(key)) for e in envs if e.get(key) is not None})
        return ", ".join(values) or "?"

    started = sorted(str(e["started"]) for e in envs if e.get("started"))
    when = f"{started[0][:10]} to {started[-1][:10]}" if started and started[0][:10] != started[-1][:10] else \
        (started[0][:10] if started else "?")
    commits = one("git_commit")
    return (f"_Made by `make results`: `{sweep_command(name)}`, then `ssmbench report {records_dir}`; "
            f"{len(records)} runs started {when} on {one('device_name')} ({one('cpu_count')} cores, "
            f"{one('device')}, {one('platform')}); ssmbench {one('ssmbench')}, torch {one('torch')}, Python {one('python')}, "
            f"git {commits[:12] if commits != '?' else '?'}._")


def render(name: str, records_dir: Path) -> str:
    """The README block of one sweep: provenance line, then the report tables (headings one level down)."""
    tables = to_markdown(build_tables(read_runs([records_dir])))
    tables = "\n".join("#" + line if line.startswith("### ") else line for line in tables.splitlines())
    return f"{begin(name)}\n{provenance_line(name, records_dir)}\n\n{tables}\n{end(name)}"


def replace_block(text: str, name: str, block: str) -> str:
    """`text` with the block of `name` (markers included) replaced by `block`; the markers must exist once."""
    head, tail = begin(name), end(name)
    if text.count(head) != 1 or text.count(tail) != 1:
        raise SystemExit(f"{README}: needs exactly one `{head}` and one `{tail}` line for the results of {name}")
    before, rest = text.split(head)
    return before + block + rest.split(tail, 1)[1]


def write_readme(readme: Path = README, records: Path = RECORDS, sweeps: list[str] = SWEEPS) -> None:
    text = readme.read_text(encoding="utf-8")
    for name in sweeps:
        text = replace_block(text, name, render(name, records / name))
        runs.atomic_write_text(records / f"{name}.csv", tidy_csv(read_runs([records / name])))
    runs.atomic_write_text(readme, text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-train", action="store_true", help="only re-render README.md from benchmarks/results/")
    args = parser.parse_args(argv)
    if not args.no_train:
        for name in SWEEPS:
            cmd = [sys.executable, "-m", "ssmbench", *sweep_command(name).split()[1:]]
            print("+", " ".join(cmd[2:]), flush=True)
            subprocess.run(cmd, check=True)
            print(f"{copy_records(name, RUNS / name, RECORDS)} finished runs copied to {RECORDS / name}", flush=True)
    write_readme()
    print(f"{README}: results of {', '.join(SWEEPS)} rewritten; tidy CSVs in {RECORDS}/", flush=True)


if __name__ == "__main__":
    main()
