"""`make tune-example`: the worked example of docs/tuning.md, alpha chosen on validation for sMNIST and for the
high-frequency synthetic task beside the S4D baseline tuned with the same budget, and its block of docs/results.md.

    python -m ssmbench.tune_example              # tune what is missing, copy the final records, rewrite docs/results.md
    python -m ssmbench.tune_example --no-train   # only re-render docs/results.md from the records

(1) `ssmbench tune recipes/tune/<name>.yaml --jobs 2` for each of TUNES (runs and studies in runs/tune-example/; a
spent budget and finished final runs are not trained again); (2) the final runs of each tune's chosen
configurations (`tune.final_specs`) replace benchmarks/results/tune-example/<name>/: recipe.yaml, results.json,
metrics.jsonl and env.json, no checkpoints; (3) a line naming the commands, date, machine and versions, then
`ssmbench report`'s tables of those records (the Tuning table states each task's chosen alpha, the space, the
budget and the trials), replace the block between BEGIN and END in docs/results.md. tests/test_tune_example.py checks
that the block is exactly what `render` makes of the committed records.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from ssmbench import runs, sweep, tune
from ssmbench.report import build_tables
from ssmbench.report.records import read_runs
from ssmbench.report.tables import to_markdown

TUNES = ["smnist-alpha", "frequency-alpha"]
RECIPES = Path("recipes/tune")
RECORDS = Path("benchmarks/results/tune-example")
README = Path("docs/results.md")  # the generated results page (moved from README.md with the per-sweep tables)
BEGIN = "<!-- results:tune-example begin (written by `make tune-example`; do not edit by hand) -->"
END = "<!-- results:tune-example end -->"
COPIED = (runs.RECIPE, runs.RESULTS, runs.METRICS, runs.ENV)


def command(name: str) -> str:
    return f"ssmbench tune {RECIPES / name}.yaml --jobs 2"


def copy_finals(name: str, records: Path = RECORDS) -> int:
    """Replace `records`/<name>/ with the finished final runs of the tune's chosen configurations; return how many."""
    path = RECIPES / f"{name}.yaml"
    spec = tune.load_tune(path)
    found = tune.studies(path, spec)
    url = tune.storage_url(Path(found[0].base.runs_dir), spec, None)
    index = sweep.index_runs(found[0].base.runs_dir)
    out = records / name
    if out.exists():
        shutil.rmtree(out)
    n = 0
    for s in found:
        for final in tune.final_specs(spec, s, tune.load_study(url, s.name, tune.direction(spec))):
            run_dir = sweep.find_finished(final, index)
            if run_dir is None:
                continue
            (out / run_dir.name).mkdir(parents=True)
            for f in COPIED:
                shutil.copyfile(run_dir / f, out / run_dir.name / f)
            n += 1
    return n


def provenance_line(records_dir: Path) -> str:
    """The commands, when, on what machine and with which versions (from the records' env.json)."""
    envs = [r.env for r in read_runs([records_dir]) if r.finished]

    def one(key: str) -> str:
        return ", ".join(sorted({str(e.get(key)) for e in envs if e.get(key) is not None})) or "?"

    days = sorted({str(e["started"])[:10] for e in envs if e.get("started")})
    when = f"{days[0]} to {days[-1]}" if len(days) > 1 else (days[0] if days else "?")
    commands = "`, `".join(command(n) for n in TUNES)
    return (f"_Made by `make tune-example`: `{commands}`, then `ssmbench report {records_dir}`; {budgets()}; "
            f"{len(envs)} final runs started {when} on {one('device_name')} ({one('cpu_count')} cores, "
            f"{one('device')}); ssmbench {one('ssmbench')}, torch {one('torch')}, git {one('git_commit')[:12]}._")


def budgets() -> str:
    """Each tune's budget as its tune file states it: trials per variant, sampler, pruner, final seeds (one phrase
    when every tune has the same)."""
    said = {}
    for name in TUNES:
        t = tune.load_tune(RECIPES / f"{name}.yaml")
        seed = f" (seed {t.sampler_seed})" if t.sampler != "random" else ""
        said[name] = (f"{t.trials} trials per variant, the baseline's included, sampler {t.sampler}{seed}, pruner "
                      f"{t.pruner}, {len(t.seeds)} seeds of each choice")
    if len(set(said.values())) == 1:
        return f"budget of each tune: {next(iter(said.values()))}"
    return "; ".join(f"budget of {name}: {text}" for name, text in said.items())


def render(records_dir: Path = RECORDS) -> str:
    """The docs/results.md block: provenance line, then the report tables (headings one level down)."""
    tables = to_markdown(build_tables(read_runs([records_dir])))
    tables = "\n".join("#" + line if line.startswith("### ") else line for line in tables.splitlines())
    return f"{BEGIN}\n{provenance_line(records_dir)}\n\n{tables}\n{END}"


def write_readme(readme: Path = README, records: Path = RECORDS) -> None:
    text = readme.read_text(encoding="utf-8")
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise SystemExit(f"{readme}: needs exactly one `{BEGIN}` and one `{END}` line")
    before, rest = text.split(BEGIN)
    runs.atomic_write_text(readme, before + render(records) + rest.split(END, 1)[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-train", action="store_true", help="only re-render docs/results.md from the committed records")
    args = parser.parse_args(argv)
    if not args.no_train:
        for name in TUNES:
            cmd = [sys.executable, "-m", "ssmbench", *command(name).split()[1:]]
            print("+", " ".join(cmd[2:]), flush=True)
            subprocess.run(cmd, check=True)
            print(f"{copy_finals(name)} final runs copied to {RECORDS / name}", flush=True)
    write_readme()
    print(f"{README}: the tune-example block rewritten from {RECORDS}/", flush=True)


if __name__ == "__main__":
    main()
