"""`ssmbench report`: comparison tables and figures from run directories alone (no re-training, no engine).

records.py reads run directories into plain records; tables.py aggregates and renders them (md, csv, latex,
json); plots.py writes the PNG figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ssmbench.errors import SSMBenchError
from ssmbench.report.records import RunRecord, parameter_change, read_runs
from ssmbench.report.tables import (RENDERERS, Table, efficiency_tables, main_table, parameter_change_table,
                                    unfinished_table)


def build_tables(records: list[RunRecord], group_by: str = "variant", window: int = 0) -> list[Table]:
    """Main table, data-efficiency tables, parameter-change table and the list of unfinished runs (when present)."""
    changes: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r.finished:
            change = parameter_change(r)
            if change is not None:
                changes.setdefault((r.label(group_by), r.task), []).append(change)
    tables = [main_table(records, group_by), *efficiency_tables(records, group_by, window),
              parameter_change_table(changes), unfinished_table(records, group_by)]
    return [t for t in tables if t is not None]


def report(paths: list[Path], group_by: str = "variant", fmt: str = "md", out: Optional[Path] = None,
           plots: Optional[Path] = None, window: int = 0) -> tuple[str, list[Path]]:
    """Render the tables of every run under `paths` in `fmt`; write them to `out` and the PNGs to `plots`.

    Returns (rendered text, written figure paths).
    """
    if fmt not in RENDERERS:
        raise SSMBenchError(f"report --format: '{fmt}' is not a format; use one of {', '.join(RENDERERS)}")
    records = read_runs(paths)
    if not records:
        raise SSMBenchError(f"report: no usable run directories under {', '.join(map(str, paths))} (a run directory "
                            "holds recipe.yaml and results.json; damaged ones are skipped with a warning; train or "
                            "sweep first)")
    text = RENDERERS[fmt](build_tables(records, group_by, window))
    if out is not None:
        from ssmbench.runs import atomic_write_text

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out), text)
    written = []
    if plots is not None:
        from ssmbench.report.plots import write_plots

        written = write_plots(records, plots, group_by, window)
    return text, written
