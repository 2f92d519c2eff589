"""`make results`: rerun the quick sweeps, test each paper's claim on their records, rewrite the results pages.

    python -m ssmbench.readme_tables              # train what is missing, copy the records, rewrite both pages
    python -m ssmbench.readme_tables --no-train   # only re-render README.md and docs/results.md from the records

For every sweep of SWEEPS: (1) runs under runs/readme/<name>/ made by other code (env.json `code_version`, a hash of
the ssmbench sources, differs from this code's, or is missing) are moved to runs/readme/stale/<name>/, so they are
trained again rather than reused; (2) `ssmbench sweep recipes/quick/<name>.yaml --runs-dir runs/readme/<name>
--jobs 2` (finished runs are skipped, so a second call trains nothing); (3) the finished records of the sweep's
current grid (older runs in the folder, e.g. of an edited recipe, are left out) replace benchmarks/results/<name>/:
each run's recipe.yaml, results.json, metrics.jsonl and env.json (without the TDI spectrum arrays), no
checkpoints, but what the claims read from them: CHANGES, the relative change of the SSM parameters between
init.pt and the final checkpoint (`ssmbench.report.records.parameter_change`) and the mean trained beta;
(4) the markdown of those records — a line naming the commands, date, machine and versions, then `ssmbench
report`'s tables — replaces the block between `<!-- results:<name> begin -->` and `<!-- results:<name> end -->` in
docs/results.md, and `ssmbench report --runs-csv`'s tidy CSV is written to benchmarks/results/<name>.csv.
The frequency-bias paper's one-pole example is no training run: `python -m ssmbench.one_pole` (ssmbench/one_pole.py,
deterministic, seconds) writes benchmarks/results/one-pole/one_pole.json, rendered as the `one-pole` block.

The claims block (`<!-- results:claims ... -->`, in README.md) is one line per entry of CLAIMS: a paper's claim, the
sweep that tests it, the figures (mean ± sample std over seeds) and whether it holds on these records. A claim names
variants of its sweep, so a new baseline is one line in the sweep file (`best` compares against every variant there).
tests/test_readme_results.py checks that README.md, docs/results.md and the CSVs are exactly what `render`,
`render_one_pole` and `render_claims` make of the committed records, so this script is the only writer of those blocks.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ssmbench import one_pole, runs
from ssmbench.report import build_tables
from ssmbench.report.records import RunRecord, parameter_change, read_run, read_runs
from ssmbench.report.tables import mean_std, tidy_csv, to_markdown

SWEEPS = ["frequency-bias", "lds", "synthetic-memory", "smnist-table", "tdi-data-efficiency"]
ONE_POLE = "one-pole"
RECORDS = Path("benchmarks/results")
RUNS = Path("runs/readme")
STALE = RUNS / "stale"
README = Path("README.md")
PAGE = Path("docs/results.md")  # the per-sweep tables; README.md keeps the claims table and links here
COPIED = (runs.RECIPE, runs.RESULTS, runs.METRICS)
CHANGES = "parameter_change.json"
CLAIMS_BLOCK = "claims"
HOLDS, FAILS = "holds", "does not hold here"


@dataclass(frozen=True)
class Claim:
    """One paper's claim, tested on the records of one sweep by one rule:

    - `order` (v1, v2, ...): each variant is better than the one before (mean test metric; accuracy up, loss down),
      at every training fraction of `fractions` (default: the full training set);
    - `best` v: v is better than every other variant of the sweep;
    - `beats` v: each other variant against v, one verdict per variant;
    - `still` (v, q): the relative change of parameter q in training (Yu et al. Table 1: Re(A), Im(A), B*C, D) is
      under a tenth of every other's, for the runs of variant v;
    - `ends` (groups, betas, place): in the one-pole example (ssmbench/one_pole.py), every init of those groups
      under those betas ends at `place`: "mode on its side" (a mode with the sign of w0), "a mode", "noise band".
    """

    paper: str
    text: str
    sweep: str
    order: tuple[str, ...] = ()
    best: str = ""
    beats: str = ""
    still: tuple[str, str] = ("", "")
    fractions: tuple[float, ...] = (1.0,)
    ends: tuple = ()


_NEAR_WEAK, _ACROSS, _RIGHT = one_pole.GROUPS
CLAIMS = [
    Claim("Yu et al. (frequency bias)", "one-pole example, Region I: a pole started outside the noise band, on the "
          "side of a mode, converges to that mode (beta = 0)", ONE_POLE,
          ends=((_NEAR_WEAK, _RIGHT), (0.0,), "mode on its side")),
    Claim("Yu et al. (frequency bias)", "one-pole example, Region II: a pole pulled toward the strong mode across the "
          "noise band gets stuck in it (beta = 0)", ONE_POLE, ends=((_ACROSS,), (0.0,), "noise band")),
    Claim("Yu et al. (frequency bias)", "one-pole example: a positive beta (Sobolev weight) lets those poles cross "
          "the band to a mode", ONE_POLE, ends=((_ACROSS,), (0.5, 1.0), "a mode")),
    Claim("Yu et al. (frequency bias)", "a larger alpha, then a trained beta (from 0), learn a high-frequency target "
          "better", "frequency-bias", order=("high-alpha1", "high-alpha10", "high-alpha10-beta")),
    Claim("Yu et al. (frequency bias)", "the bias reverses on a low-frequency target: alpha = 1 beats alpha = 10",
          "frequency-bias", order=("low-alpha10", "low-alpha1")),
    Claim("Yu et al. (frequency bias)", "Im(A) barely moves in training (Table 1: relative change 0.014 against ~1 "
          "for Re(A), B*C, D)", "smnist-table", still=("s4d", "Im(A)")),
    Claim("Chen & Chen (TDI)", "with little training data, TDI generalizes better than S4D-Lin", "tdi-data-efficiency",
          order=("s4d", "tdi"), fractions=(0.05, 0.2)),
    Claim("Chen & Chen (TDI)", "matching the task's power spectrum places the poles on a planted high frequency that "
          "S4D-Lin misses", "frequency-bias", order=("high-alpha1", "high-tdi")),
    Claim("Liu & Li (zero real part)", "Re(A) = 0 keeps x_0 over L = 128 where Re(A) = -1/2 forgets it",
          "synthetic-memory", order=("re-0.5", "zero-real")),
    Claim("Agarwal et al. (STU)", "STU learns the marginally stable LDS better than S4D and LRU (Fig. 3)", "lds",
          best="stu"),
    Claim("all four", "each method matches or beats S4D on sMNIST", "smnist-table", beats="s4d"),
]


def begin(name: str) -> str:
    return f"<!-- results:{name} begin (written by `make results`; do not edit by hand) -->"


def end(name: str) -> str:
    return f"<!-- results:{name} end -->"


def sweep_command(name: str) -> str:
    if name == ONE_POLE:
        return f"python -m ssmbench.one_pole --out {RECORDS / ONE_POLE}"
    return f"ssmbench sweep recipes/quick/{name}.yaml --runs-dir {RUNS / name} --jobs 2"


def move_stale(name: str, runs_dir: Path, stale: Path, version: str) -> int:
    """Move the run directories of `runs_dir` whose env.json code_version is not `version` (or that have none) to
    `stale`/<name>/; return how many. Runs without an env.json yet (being set up) are left alone."""
    moved = 0
    if not runs_dir.is_dir():
        return 0
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir() and (p / runs.ENV).is_file()):
        env = runs.read_json(run_dir / runs.ENV) or {}
        if env.get("code_version") != version:
            dest = stale / name / run_dir.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(dest, ignore_errors=True)
            shutil.move(str(run_dir), dest)
            moved += 1
    return moved


def checkpoint_facts(run: RunRecord) -> Optional[dict]:
    """What the claims read from a run's checkpoints: the relative change of Re(A), Im(A), B*C, D between init.pt
    and the final weights, and the mean of every trained beta (None: no S4D layer or no checkpoints)."""
    from ssmbench.report.records import final_checkpoint
    from ssmbench.train import checkpoint

    change = parameter_change(run)
    if change is None:
        return None
    facts: dict = {"relative_change": {k: (v if math.isfinite(v) else None) for k, v in change.items()}}
    state = checkpoint.load(final_checkpoint(run.run_dir))["model"]
    betas = [v.double().flatten() for k, v in state.items() if k.endswith("layer.beta")]
    if betas:
        import torch

        facts["beta_mean"] = float(torch.cat(betas).mean())
    return facts


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
        facts = checkpoint_facts(run)
        if facts is not None:
            runs.atomic_write_json(dest / CHANGES, facts)
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
            f"git {commits[:12] if commits != '?' else '?'}, code {one('code_version')}._")


def render(name: str, records_dir: Path) -> str:
    """The README block of one sweep: provenance line, then the report tables (headings one level down)."""
    tables = to_markdown(build_tables(read_runs([records_dir])))
    tables = "\n".join("#" + line if line.startswith("### ") else line for line in tables.splitlines())
    return f"{begin(name)}\n{provenance_line(name, records_dir)}\n\n{tables}\n{end(name)}"


# --------------------------------------------------------------------------------------------------
# Claims


@dataclass(frozen=True)
class Score:
    """A variant's test metric over seeds: mean, sample std, n, and whether higher is better."""

    mean: float
    std: float
    n: int
    higher_is_better: bool

    def better_than(self, other: "Score") -> bool:
        return self.mean > other.mean if self.higher_is_better else self.mean < other.mean

    def __str__(self) -> str:
        if self.higher_is_better:
            return f"{self.mean:.2f} ± {self.std:.2f} %"
        return f"{self.mean:.3g} ± {self.std:.2g}"


def score(records: list[RunRecord], variant: str, fraction: float = 1.0) -> Optional[Score]:
    """Mean test accuracy (classification) or test loss (regression) of the finished runs of `variant`."""
    group = [r for r in records if r.finished and r.label() == variant and r.train_fraction == fraction]
    if not group:
        return None
    classification = group[0].kind == "classification"
    values = [r.test["accuracy"] * 100 if classification else r.test["loss"] for r in group]
    mean, std = mean_std(values)
    return Score(mean, std, len(values), classification)


def learned_beta(records_dir: Path, records: list[RunRecord], variant: str) -> Optional[float]:
    """Mean over runs of the trained beta of `variant` (from CHANGES), None if it has none."""
    betas = [f["beta_mean"] for r in records if r.label() == variant
             for f in [runs.read_json(records_dir / r.run_dir.name / CHANGES) or {}] if "beta_mean" in f]
    return sum(betas) / len(betas) if betas else None


def judge_ends(claim: Claim, records_dir: Path) -> tuple[str, str]:
    """(figures, verdict) of an `ends` claim on the one-pole record in `records_dir`."""
    record = runs.read_json(records_dir / one_pole.RESULTS)
    if not record:
        return f"no records of {ONE_POLE}; run `make results`", FAILS
    groups, betas, place = claim.ends
    parts, ok = [], True
    for beta in betas:
        for group in groups:
            mine = [t for t in record["trajectories"] if t["group"] == group and t["beta"] == beta]
            if not mine:
                return f"no records of {group!r} at beta {beta:g}; run `make results`", FAILS
            for t in mine:
                at_mode = t["ended"] in ("strong mode", "weak mode")
                ok = ok and {"mode on its side": at_mode and t["w"] * t["w0"] > 0, "a mode": at_mode,
                             "noise band": t["ended"] == "noise band"}[place]
            starts = "/".join(f"{t['w0']:g}" for t in mine)
            ends = "/".join(f"{t['w']:.2f}" for t in mine)
            parts.append(f"beta {beta:g}: w0 {starts} → w {ends} ({', '.join(sorted({t['ended'] for t in mine}))})")
    return "; ".join(parts), HOLDS if ok else FAILS


def judge(claim: Claim, records_dir: Path) -> tuple[str, str]:
    """(figures, verdict) of one claim on the records in `records_dir`."""
    if claim.ends:
        return judge_ends(claim, records_dir)
    records = [r for r in read_runs([records_dir]) if r.finished]
    metric = "test acc" if records and records[0].kind == "classification" else "test MSE"
    missing = "no records of {}; run `make results`"
    if claim.order:
        parts, ok = [], True
        for f in claim.fractions:
            scores = [score(records, v, f) for v in claim.order]
            absent = [v for v, s in zip(claim.order, scores) if s is None]
            if absent:
                return missing.format(", ".join(absent)), FAILS
            shown = []
            for v, s in zip(claim.order, scores):
                beta = learned_beta(records_dir, records, v)
                shown.append(f"{v} {s}" + (f" (trained beta {beta:+.2f})" if beta is not None else ""))
            parts.append(("" if f == 1.0 else f"{f:g} of the data: ") + " → ".join(shown))
            ok = ok and all(b.better_than(a) for a, b in zip(scores, scores[1:]))
        return f"{metric}: " + "; ".join(parts), HOLDS if ok else FAILS
    variants = sorted({r.label() for r in records})
    scores = {v: score(records, v) for v in variants}
    scores = {v: s for v, s in scores.items() if s is not None}
    ranked = sorted(scores, key=lambda v: -scores[v].mean if scores[v].higher_is_better else scores[v].mean)
    figures = f"{metric}: " + ", ".join(f"{v} {scores[v]}" for v in ranked)
    if claim.best:
        if claim.best not in scores or len(scores) < 2:
            return missing.format(claim.best), FAILS
        ok = all(scores[claim.best].better_than(s) for v, s in scores.items() if v != claim.best)
        return figures, HOLDS if ok else FAILS
    if claim.beats:
        if claim.beats not in scores:
            return missing.format(claim.beats), FAILS
        base = scores[claim.beats]
        others = [v for v in ranked if v != claim.beats]
        good = [v for v in others if not base.better_than(scores[v])]
        bad = [v for v in others if base.better_than(scores[v])]
        verdict = "; ".join(([f"{HOLDS} for {', '.join(good)}"] if good else []) +
                            ([f"{FAILS} for {', '.join(bad)}"] if bad else []))
        return figures, verdict
    variant, quantity = claim.still
    changes = [f["relative_change"] for r in records if r.label() == variant
               for f in [runs.read_json(records_dir / r.run_dir.name / CHANGES) or {}] if "relative_change" in f]
    if not changes:
        return missing.format(f"the parameter change of {variant}"), FAILS
    means = {q: sum(c[q] for c in changes) / len(changes) for q in changes[0] if all(c[q] is not None for c in changes)}
    figures = f"{variant}, relative change over {len(changes)} runs: " + ", ".join(f"{q} {m:.3g}" for q, m in means.items())
    ok = quantity in means and all(means[quantity] < 0.1 * m for q, m in means.items() if q != quantity)
    return figures, HOLDS if ok else FAILS


def budget(name: str, records_dir: Path) -> str:
    """What a sweep's records cost: runs and optimizer steps per run (the one-pole example: its gradient flows)."""
    if name == ONE_POLE:
        record = runs.read_json(records_dir / one_pole.RESULTS) or {}
        return f"{len(record.get('trajectories', []))} gradient flows"
    steps = sorted({r.results.get("steps") for r in read_runs([records_dir]) if r.finished} - {None})
    n = sum(1 for r in read_runs([records_dir]) if r.finished)
    shown = "?" if not steps else (f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}–{steps[-1]}")
    return f"{n} runs × {shown} steps"


def render_claims(records: Path = RECORDS, claims: list[Claim] = CLAIMS) -> str:
    """The claims block: one table row per claim."""
    lines = ["| paper | claim | task (sweep: budget) | command | figures (mean ± std over seeds) | holds |",
             "|---|---|---|---|---|---|"]
    for c in claims:
        figures, verdict = judge(c, records / c.sweep)
        tasks = (["one-pole transfer function"] if c.sweep == ONE_POLE else
                 sorted({r.task for r in read_runs([records / c.sweep])}) or ["?"])
        lines.append(f"| {c.paper} | {c.text} | {', '.join(tasks)} (`{c.sweep}`: {budget(c.sweep, records / c.sweep)}) "
                     f"| `{sweep_command(c.sweep)}` | {figures} | {verdict} |")
    note = ("_Each claim is tested on the records of its sweep in benchmarks/results/ (per sweep, with its budget, "
            f"in [{PAGE}]({PAGE})); better = higher test accuracy or lower test MSE, means over seeds compared; the "
            "one-pole example is deterministic, its three inits per group stand in for seeds; "
            f"\"{FAILS}\" is reported as measured, with no retuning._")
    return f"{begin(CLAIMS_BLOCK)}\n" + "\n".join(lines) + f"\n\n{note}\n{end(CLAIMS_BLOCK)}"


def render_one_pole(records_dir: Path) -> str:
    """The one-pole block: provenance line, where each init ended under each beta, the loss profile's minima."""
    record = runs.read_json(records_dir / one_pole.RESULTS) or {}
    env = record.get("env", {})
    betas = record.get("betas", [])
    lines = [f"_Made by `make results`: `{sweep_command(ONE_POLE)}`; started {str(env.get('started', '?'))[:10]} "
             f"({env.get('platform', '?')}, {env.get('wall_seconds', '?')} s), numpy {env.get('numpy', '?')}, scipy "
             f"{env.get('scipy', '?')}, Python {env.get('python', '?')}, code {env.get('code_version', '?')}. Gradient "
             "flow on (xi, w) from xi = 1 to a stationary point; the strong mode is w = 50 (xi 5), the weak one "
             "w = -50 (xi 0.2), the noise band |w| <= 2pi (docs/methods.md §B.1)._", "",
             "| group | w0 | " + " | ".join(f"beta {b:g}: final w (xi), where" for b in betas) + " |",
             "|---|---|" + "---|" * len(betas)]
    trajectories = record.get("trajectories", [])
    for group, inits in record.get("groups", {}).items():
        for w0 in inits:
            cells = [f"{t['w']:.3f} ({t['xi']:.3g}), {t['ended']}" for b in betas for t in trajectories
                     if t["group"] == group and t["w0"] == w0 and t["beta"] == b]
            lines.append(f"| {group} | {w0:g} | " + " | ".join(cells) + " |")
    minima = record.get("local_minima", {})
    lines += ["", "Local minima in w of the loss minimized over xi: " +
              "; ".join(f"beta {b}: {', '.join(f'{m:g}' for m in ms)}" for b, ms in minima.items()) + "."]
    return f"{begin(ONE_POLE)}\n" + "\n".join(lines) + f"\n{end(ONE_POLE)}"


def replace_block(text: str, name: str, block: str, page: Path = README) -> str:
    """`text` with the block of `name` (markers included) replaced by `block`; the markers must exist once."""
    head, tail = begin(name), end(name)
    if text.count(head) != 1 or text.count(tail) != 1:
        raise SystemExit(f"{page}: needs exactly one `{head}` and one `{tail}` line for the results of {name}")
    before, rest = text.split(head)
    return before + block + rest.split(tail, 1)[1]


def write_pages(readme: Path = README, page: Path = PAGE, records: Path = RECORDS, sweeps: list[str] = SWEEPS) -> None:
    """README.md's claims block; docs/results.md's block per sweep and the one-pole block; the tidy CSVs."""
    claims = replace_block(readme.read_text(encoding="utf-8"), CLAIMS_BLOCK, render_claims(records), readme)
    text = page.read_text(encoding="utf-8")
    for name in sweeps:
        text = replace_block(text, name, render(name, records / name), page)
        runs.atomic_write_text(records / f"{name}.csv", tidy_csv(read_runs([records / name])))
    text = replace_block(text, ONE_POLE, render_one_pole(records / ONE_POLE), page)
    runs.atomic_write_text(readme, claims)
    runs.atomic_write_text(page, text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-train", action="store_true",
                        help=f"only re-render {README} and {PAGE} from {RECORDS}/")
    parser.add_argument("--only", nargs="+", choices=[*SWEEPS, ONE_POLE],
                        help="train only these sweeps (the pages: all)")
    args = parser.parse_args(argv)
    if not args.no_train:
        version = runs.code_version()
        todo = args.only or [*SWEEPS, ONE_POLE]
        if ONE_POLE in todo:  # deterministic and seconds long: always made again by this code
            cmd = [sys.executable, "-m", "ssmbench.one_pole", "--out", str(RECORDS / ONE_POLE)]
            print("+", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=True)
        for name in [n for n in todo if n != ONE_POLE]:
            moved = move_stale(name, RUNS / name, STALE, version)
            if moved:
                print(f"{moved} runs of {RUNS / name} made by other code (code_version != {version}) moved to "
                      f"{STALE / name}", flush=True)
            cmd = [sys.executable, "-m", "ssmbench", *sweep_command(name).split()[1:]]
            print("+", " ".join(cmd[2:]), flush=True)
            subprocess.run(cmd, check=True)
            print(f"{copy_records(name, RUNS / name, RECORDS)} finished runs copied to {RECORDS / name}", flush=True)
    write_pages()
    print(f"{README}: claims rewritten; {PAGE}: results of {', '.join([*SWEEPS, ONE_POLE])}; tidy CSVs in {RECORDS}/",
          flush=True)


if __name__ == "__main__":
    main()
