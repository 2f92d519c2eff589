"""Which runs a table cell may pool: runs whose resolved recipes agree on everything but the seed.

A run's *configuration* is its resolved recipe (recipe.yaml) as dotted fields (`train.max_steps: 150`), without
`name`, `seed` and `tags` (labels and the seed a cell averages over), `data.train_fraction` (a grid axis: the
column of a data-efficiency table) and the execution-only fields of EXECUTION_FIELDS, which change where and how
fast a run computes, not what it computes.

A cell holds the runs of one row label (tag `group_by`, e.g. the sweep's `variant`), task and training fraction.
When runs of one label differ in a configuration field within such a cell, the label is split into one row per
combination of the differing fields, e.g. `s4d [train.max_steps=40]` and `s4d [train.max_steps=60]`; the
fields are those that differ within any cell of the label, so every row is one configuration. A seed recorded
twice in a cell (the same configuration trained again) is counted once: the newest run (env.json `started`; of
runs started at the same second, the last by run directory path) is kept and the others are listed as duplicates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from ssmbench.recipe import flatten
from ssmbench.report.records import RunRecord

# Fields that say where and how fast a run executes; runs differing only in these are the same experiment.
EXECUTION_FIELDS = {"train.threads", "train.device", "train.compile", "train.cuda_graphs", "train.checkpoint_every",
                    "data.num_workers", "data.root", "model.stu.cache_dir"}
NOT_CONFIGURATION = {"name", "seed", "data.train_fraction"}
NOT_CONFIGURATION_PREFIXES = ("tags.",)


def configuration(run: RunRecord) -> dict[str, Any]:
    """The dotted fields of a run's resolved recipe that define the experiment (see the module docstring)."""
    return {k: v for k, v in flatten(run.recipe).items()
            if k not in NOT_CONFIGURATION and k not in EXECUTION_FIELDS and not k.startswith(NOT_CONFIGURATION_PREFIXES)}


def show(value: Any) -> str:
    """A field value as in recipe.yaml / --set (null, true, 0.001, [1, 2])."""
    return json.dumps(value) if not isinstance(value, str) else value


def differing_fields(configs: list[dict[str, Any]]) -> list[str]:
    """Sorted fields whose value is not the same in every configuration (a missing field counts as a value)."""
    keys = sorted(set().union(*configs)) if configs else []
    missing = object()
    return [k for k in keys if len({json.dumps(c.get(k, missing), sort_keys=True, default=str) for c in configs}) > 1]


@dataclass
class CellRuns:
    """The runs of one table cell: `runs` are counted (one per seed), `duplicates` are not."""

    runs: list[RunRecord] = field(default_factory=list)
    duplicates: list[RunRecord] = field(default_factory=list)


@dataclass
class Rows:
    """Row labels of finished runs after splitting labels whose runs differ (see the module docstring)."""

    row: dict[str, str]  # str(run_dir) -> row label
    split: dict[str, list[str]]  # label -> configuration fields its rows are split by (only labels that split)

    def of(self, run: RunRecord) -> str:
        return self.row[str(run.run_dir)]


def assign_rows(records: list[RunRecord], group_by: str = "variant") -> Rows:
    """Row label of every record: its `group_by` label, plus `[field=value, ...]` when the label is split."""
    cells: dict[tuple, list[RunRecord]] = {}
    for r in records:
        cells.setdefault((r.label(group_by), r.task, r.train_fraction), []).append(r)
    split: dict[str, set[str]] = {}
    for (label, _, _), runs_ in cells.items():
        split.setdefault(label, set()).update(differing_fields([configuration(r) for r in runs_]))
    row = {}
    for r in records:
        fields = sorted(split[r.label(group_by)])
        config = configuration(r)
        suffix = ", ".join(f"{k}={show(config[k]) if k in config else 'unset'}" for k in fields)
        row[str(r.run_dir)] = f"{r.label(group_by)} [{suffix}]" if fields else r.label(group_by)
    return Rows(row, {label: sorted(f) for label, f in split.items() if f})


def newest_first(run: RunRecord) -> tuple[str, str]:
    return str(run.env.get("started") or ""), str(run.run_dir)


def cell_runs(records: list[RunRecord], key: Callable[[RunRecord], Any]) -> dict[Any, CellRuns]:
    """Group records by `key` (which must include the row label) and keep one run per seed in each group."""
    groups: dict[Any, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    out = {}
    for k, runs_ in groups.items():
        cell, seen = CellRuns(), set()
        for r in sorted(runs_, key=newest_first, reverse=True):
            (cell.duplicates if r.seed in seen else cell.runs).append(r)
            seen.add(r.seed)
        cell.runs.sort(key=lambda r: (r.seed if isinstance(r.seed, int) else -1, str(r.run_dir)))
        out[k] = cell
    return out


def describe_cell(title: str, cell: CellRuns, split_by: list[str], value: Callable[[RunRecord], str]) -> list[str]:
    """`report --explain` lines of one cell: counted runs and duplicates, differing and shared fields."""
    lines = [f"{title}: {len(cell.runs)} run(s)"]
    lines += [f"  counted   {r.run_dir} (seed {r.seed}): {value(r)}" for r in cell.runs]
    lines += [f"  duplicate {r.run_dir} (seed {r.seed}, not counted: the counted run of this seed is newer, or as new "
              f"and later by path): {value(r)}" for r in cell.duplicates]
    configs = [configuration(r) for r in cell.runs]
    differ = ["seed"] + differing_fields(configs)
    lines.append(f"  differ in: {', '.join(differ)}")
    if split_by:
        lines.append(f"  row split from the label's other runs by: {', '.join(split_by)}")
    shared = {k: v for k, v in configs[0].items() if k not in differ} if configs else {}
    lines.append("  shared: " + ", ".join(f"{k}={show(v)}" for k, v in sorted(shared.items())))
    return lines
