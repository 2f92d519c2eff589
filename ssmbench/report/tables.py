"""Comparison tables from run records, rendered as Markdown, CSV, LaTeX or JSON.

- Main table (the papers' LRA tables): one row per variant, one column per task, cells `mean ± std (n)` over
  seeds of test accuracy in % (classification) or test loss (regression); std is the sample std (ddof = 1); the
  best cell of each column is marked; `Avg.` is the mean of a row's accuracy cells when the row has them all.
- Data efficiency (TDI paper): per task, median over seeds of test loss (and accuracy) per variant and
  `data.train_fraction`; with `window = W`, the mean of the last W validation evaluations replaces the test value.
- Parameter change (Yu et al., Table 1): mean over runs of ||p_end - p_init|| / ||p_init|| per variant and task.
- Runs that are not finished are listed in their own table and never enter a mean.

Runs trained on data that is not the official data set carry a mark (†, ‡, §) explained under the table.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ssmbench.report.records import RunRecord

# Rows in the order the papers print them (baseline first), then any other variant alphabetically.
VARIANT_ORDER = ["s4d", "s4d-lin", "s4d-inv", "s4d-legs", "s4d-real", "alpha", "beta", "alpha-beta", "zero-real",
                 "tdi", "stu", "ar-stu"]
# Columns: the LRA tasks in the LRA order, then the others alphabetically.
TASK_ORDER = ["listops", "text", "imdb", "retrieval", "aan", "image", "cifar", "pathfinder", "pathx", "path-x",
              "speechcommands", "sc10", "sc35", "smnist", "pmnist"]
SOURCE_MARKS = {
    "embedded-subset": ("†", "trained on the embedded real subset shipped with ssmbench, not the full data set"),
    "generated": ("‡", "trained on data regenerated with the published procedure, not the official release"),
    "synthetic": ("§", "trained on a synthetic stand-in, not the real task"),
    "unknown": ("?", "data source not recorded"),
}


@dataclass
class Cell:
    text: str  # plain display text, without best/source marks
    value: Any = None  # raw numbers for JSON
    best: bool = False
    mark: str = ""


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)


def ordered(names, order: list[str]) -> list[str]:
    """`names` sorted by their position in `order`, unknown names after them alphabetically."""
    rank = {n: i for i, n in enumerate(order)}
    return sorted(set(names), key=lambda n: (rank.get(n.lower(), len(order)), n))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0.0 for a single value)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def source_mark(group: list[RunRecord]) -> str:
    return "".join(sorted({SOURCE_MARKS[r.source if r.source in SOURCE_MARKS else "unknown"][0]
                           for r in group if r.source != "official"}))


def legend(marks: set[str]) -> list[str]:
    return [f"{sym} {text}" for sym, text in SOURCE_MARKS.values() if sym in marks]


def is_classification(group: list[RunRecord]) -> bool:
    return all(r.kind == "classification" and "accuracy" in r.test for r in group)


def group_runs(records: list[RunRecord], key: Callable[[RunRecord], Any]) -> dict[Any, list[RunRecord]]:
    groups: dict[Any, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    return groups


# --------------------------------------------------------------------------------------------------
# Tables


def main_table(records: list[RunRecord], group_by: str = "variant") -> Optional[Table]:
    finished = [r for r in records if r.finished and r.test]
    done = [r for r in finished if r.train_fraction == 1.0]  # low-data runs belong to the data-efficiency tables
    if not done:
        return None
    cells = group_runs(done, lambda r: (r.label(group_by), r.task))
    variants = ordered({v for v, _ in cells}, VARIANT_ORDER)
    tasks = ordered({t for _, t in cells}, TASK_ORDER)
    accuracy_task = {t: all(is_classification(g) for (_, tt), g in cells.items() if tt == t) for t in tasks}
    stats = {}
    for key, g in cells.items():
        acc = accuracy_task[key[1]]
        m, s = mean_std([100 * r.test["accuracy"] if acc else r.test["loss"] for r in g])
        stats[key] = (m, s, len(g))
    best = {}
    for t in tasks:
        means = [stats[(v, t)][0] for v in variants if (v, t) in stats]
        best[t] = max(means) if accuracy_task[t] else min(means)
    marks: set[str] = set()
    rows = []
    for v in variants:
        row = [Cell(v, v)]
        for t in tasks:
            if (v, t) not in stats:
                row.append(Cell("—"))
                continue
            m, s, n = stats[(v, t)]
            text = (f"{m:.2f} ± {s:.2f} ({n})" if accuracy_task[t] else f"{m:.4g} ± {s:.2g} ({n})") if n > 1 \
                else (f"{m:.2f} ({n})" if accuracy_task[t] else f"{m:.4g} ({n})")
            mark = source_mark(cells[(v, t)])
            marks.update(mark)
            row.append(Cell(text, {"mean": m, "std": s, "n": n}, best=m == best[t], mark=mark))
        acc_means = [stats[(v, t)][0] for t in tasks if accuracy_task[t] and (v, t) in stats]
        n_acc = sum(accuracy_task.values())
        avg = float(np.mean(acc_means)) if n_acc and len(acc_means) == n_acc else None
        row.append(Cell(f"{avg:.2f}" if avg is not None else "—", avg))
        rows.append(row)
    columns = [group_by] + [f"{t} ({'acc %' if accuracy_task[t] else 'loss ↓'})" for t in tasks] + ["Avg."]
    notes = ["mean ± sample std over seeds (n runs); best per column in bold (CSV: *); Avg. over the accuracy columns"]
    if len(done) < len(finished):
        notes.append(f"full training set only; {len(finished) - len(done)} runs with data.train_fraction < 1 are in "
                     "the data-efficiency tables")
    return Table("Test results", columns, rows, notes + legend(marks))


def efficiency_value(r: RunRecord, key: str, window: int) -> Optional[float]:
    """Test `key` of a run, or with window > 0 the mean of its last `window` validation values of `key`."""
    if window <= 0:
        return r.test.get(key)
    values = r.curve("val", key)[1][-window:]
    return float(np.mean(values)) if values else None


def efficiency_tables(records: list[RunRecord], group_by: str = "variant", window: int = 0) -> list[Table]:
    """Per task: rows = variants, columns = train fractions, cells `median loss / median acc % (n)`."""
    done = [r for r in records if r.finished and r.test]
    tables = []
    split = f"mean of the last {window} validation evaluations" if window > 0 else "test"
    for task, task_runs in ((t, [r for r in done if r.task == t]) for t in ordered({r.task for r in done}, TASK_ORDER)):
        fractions = sorted({r.train_fraction for r in task_runs})
        if len(fractions) < 2:
            continue
        cells = group_runs(task_runs, lambda r: (r.label(group_by), r.train_fraction))
        marks: set[str] = set()
        rows = []
        for v in ordered({v for v, _ in cells}, VARIANT_ORDER):
            row = [Cell(v, v)]
            for f in fractions:
                g = cells.get((v, f), [])
                losses = [x for x in (efficiency_value(r, "loss", window) for r in g) if x is not None]
                accs = [x for x in (efficiency_value(r, "accuracy", window) for r in g) if x is not None]
                if not losses:
                    row.append(Cell("—"))
                    continue
                loss = float(np.median(losses))
                acc = float(np.median(accs)) * 100 if accs and len(accs) == len(losses) else None
                text = f"{loss:.4g}" + (f" / {acc:.2f}" if acc is not None else "") + f" ({len(losses)})"
                mark = source_mark(g)
                marks.update(mark)
                row.append(Cell(text, {"median_loss": loss, "median_accuracy": acc, "n": len(losses)}, mark=mark))
            rows.append(row)
        columns = [group_by] + [f"{f:g}" for f in fractions]
        notes = [f"{task}: median over seeds of the {split} loss (/ accuracy %) (n runs) per training fraction"]
        tables.append(Table(f"Data efficiency: {task}", columns, rows, notes + legend(marks)))
    return tables


def parameter_change_table(changes: dict[tuple[str, str], list[dict[str, float]]]) -> Optional[Table]:
    """Rows (variant, task) -> mean over runs of each relative change; `changes` maps a group to per-run dicts."""
    if not changes:
        return None
    quantities = ["Re(A)", "Im(A)", "B*C", "D"]
    rows = []
    for task in ordered({t for _, t in changes}, TASK_ORDER):
        for v in ordered({v for v, t in changes if t == task}, VARIANT_ORDER):
            runs_ = changes[(v, task)]
            row = [Cell(v, v), Cell(task, task)]
            for q in quantities:
                vals = [c[q] for c in runs_ if math.isfinite(c[q])]
                m = float(np.mean(vals)) if vals else None
                row.append(Cell(f"{m:.3g}" if m is not None else "—", m))
            row.append(Cell(str(len(runs_)), len(runs_)))
            rows.append(row)
    note = "mean over runs of ||p_end - p_init|| / ||p_init|| (all S4D layers; end = best.pt, else last.pt)"
    return Table("Relative change of the SSM parameters", ["variant", "task"] + quantities + ["n"], rows, [note])


def unfinished_table(records: list[RunRecord], group_by: str = "variant") -> Optional[Table]:
    rest = [r for r in records if not r.finished]
    if not rest:
        return None
    rows = [[Cell(r.run_dir.name), Cell(r.label(group_by)), Cell(r.task), Cell(r.status), Cell(r.detail)] for r in rest]
    return Table("Runs not in the tables (not finished)", ["run", group_by, "task", "status", "detail"], rows)


# --------------------------------------------------------------------------------------------------
# Rendering


def _md_cell(c: Cell) -> str:
    text = c.text.replace("|", "\\|")
    return (f"**{text}**" if c.best else text) + c.mark


def to_markdown(tables: list[Table]) -> str:
    out = []
    for t in tables:
        out += [f"### {t.title}", "", "| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
        out += [""] + [f"{n}  " for n in t.notes] + ([""] if t.notes else [])
    return "\n".join(out).rstrip() + "\n"


def to_csv(tables: list[Table]) -> str:
    """One block per table: a `# title` line, header and rows (best cells end in `*`), `# note` lines."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for i, t in enumerate(tables):
        if i:
            buf.write("\n")
        buf.write(f"# {t.title}\n")
        w.writerow(t.columns)
        w.writerows([c.text + c.mark + ("*" if c.best else "") for c in row] for row in t.rows)
        buf.writelines(f"# {n}\n" for n in t.notes)
    return buf.getvalue()


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$", "↓": r"$\downarrow$",
                 "—": "--", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "§": r"$^\S$"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(tables: list[Table]) -> str:
    """booktabs tabulars, one per table, best cells in \\textbf, notes below each."""
    out = []
    for t in tables:
        out += [f"% {t.title}", r"\begin{tabular}{l" + "c" * (len(t.columns) - 1) + "}", r"\toprule",
                " & ".join(latex_escape(c) for c in t.columns) + r" \\", r"\midrule"]
        for row in t.rows:
            cells = [(rf"\textbf{{{latex_escape(c.text)}}}" if c.best else latex_escape(c.text)) + latex_escape(c.mark)
                     for c in row]
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"] + [f"% {latex_escape(n)}" for n in t.notes] + [""]
    return "\n".join(out)


def to_json(tables: list[Table]) -> str:
    """A list of tables, each {title, columns, rows: [{column: {text, value, best, mark}}], notes}."""
    data = [{"title": t.title, "columns": t.columns, "notes": t.notes,
             "rows": [{col: {"text": c.text, "value": c.value, "best": c.best, "mark": c.mark}
                       for col, c in zip(t.columns, row)} for row in t.rows]} for t in tables]
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


RENDERERS = {"md": to_markdown, "csv": to_csv, "latex": to_latex, "json": to_json}
