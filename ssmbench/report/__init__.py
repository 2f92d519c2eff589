"""`ssmbench report`: comparison tables and figures from run directories alone (no re-training, no engine).

records.py reads run directories into plain records; cells.py decides which runs a cell may pool; tables.py
aggregates and renders them (md, csv, latex, json, and the tidy one-line-per-run CSV); plots.py writes the PNG
figures; readme.py regenerates the README's results section (`make results`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ssmbench.errors import SSMBenchError
from ssmbench.report.records import RunRecord, parameter_change, printable, read_runs
from ssmbench.report.cells import cell_runs
from ssmbench.report.tables import (RENDERERS, Table, comparison_table, efficiency_tables, finished_rows, main_cells,
                                    main_table, parameter_change_table, tidy_csv, tuning_table, unfinished_table)


def is_trial(r: RunRecord) -> bool:
    """A trial of `ssmbench tune` (only its Tuning table shows them; the tables show the final runs)."""
    return r.tags.get("tune_role") == "trial"


def build_tables(records: list[RunRecord], group_by: str = "variant", window: int = 0) -> list[Table]:
    """Main table, comparison with the baseline, tuning, data-efficiency tables, parameter-change table and the
    list of unfinished runs (when present). Tune trials enter only the tuning table."""
    tuning = tuning_table(records, group_by)
    records = [r for r in records if not is_trial(r)]
    changes: dict[tuple[str, str], list[dict]] = {}
    rows = finished_rows(records, group_by)
    full = [r for r in records if r.finished and r.test and r.train_fraction == 1.0]
    for key, cell in cell_runs(full, lambda r: (rows.of(r), r.task)).items():
        for r in cell.runs:
            change = parameter_change(r)
            if change is not None:
                changes.setdefault(key, []).append(change)
    mc = main_cells(records, group_by)
    tables = [main_table(records, group_by, mc), comparison_table(records, group_by, mc), tuning,
              *efficiency_tables(records, group_by, window),
              parameter_change_table(changes), unfinished_table(records, group_by)]
    return [t for t in tables if t is not None]


def report(paths: list[Path], group_by: str = "variant", fmt: str = "md", out: Optional[Path] = None,
           plots: Optional[Path] = None, window: int = 0, explain: bool = False,
           runs_csv: Optional[Path] = None) -> tuple[str, list[Path]]:
    """Render the tables of every run under `paths` in `fmt`; write them to `out` and the PNGs to `plots`.

    `explain` adds, per cell, the run directories and the fields they share and differ in; `runs_csv` receives
    the tidy one-line-per-run-and-metric CSV. Returns (rendered text, written figure paths).
    """
    if fmt not in RENDERERS:
        raise SSMBenchError(f"report --format: '{fmt}' is not a format; use one of {', '.join(RENDERERS)}")
    records = read_runs(paths)
    if not records:
        raise SSMBenchError(f"report: no usable run directories under {', '.join(map(str, paths))} (a run directory "
                            "holds recipe.yaml and results.json; damaged ones are skipped with a warning; train or "
                            "sweep first)")
    text = printable(RENDERERS[fmt](build_tables(records, group_by, window), explain))  # no terminal escapes
    from ssmbench.runs import atomic_write_text

    tidy = tidy_csv([r for r in records if not is_trial(r)], group_by) if runs_csv is not None else None
    for path, content in ((out, text), (runs_csv, tidy)):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(path), content)
    written = []
    if plots is not None:
        from ssmbench.report.plots import write_plots

        written = write_plots(records, plots, group_by, window)
    return text, written
