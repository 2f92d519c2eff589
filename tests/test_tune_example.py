"""The README's tune-example block is exactly what `make tune-example` (ssmbench/tune_example.py) renders from the
committed final runs in benchmarks/results/tune-example/, and those runs are what the example claims: alpha tuned on
validation for each task beside the baseline with the same budget, 3 seeds of each choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssmbench.report.records import read_runs
from ssmbench.tune_example import BEGIN, END, README, RECORDS, TUNES, render, write_readme


@pytest.fixture(autouse=True)
def records_committed(repo_root: Path) -> None:
    if not (repo_root / RECORDS).is_dir():
        pytest.skip(f"no records in {RECORDS}: run `make tune-example` (28 short runs)")


def test_readme_block_is_what_the_records_give(repo_root: Path, monkeypatch) -> None:
    monkeypatch.chdir(repo_root)
    text = README.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    block = BEGIN + text.split(BEGIN)[1].split(END)[0] + END
    assert block == render(RECORDS), "README.md's tune-example block is stale or hand-edited; run `make tune-example`"
    assert "#### Tuning" in block and "init.alpha=" in block


def test_the_records_are_tuned_final_runs_with_equal_budgets(repo_root: Path) -> None:
    records = read_runs([repo_root / RECORDS])
    assert records and all(r.finished and r.tags["tune_role"] == "final" for r in records)
    for name in TUNES:
        mine = [r for r in records if r.tags["tune"] == f"tune-{name}"]
        assert sorted((r.label(), r.seed) for r in mine) == [(v, s) for v in ("alpha", "s4d") for s in (0, 1, 2)]
        assert {r.tags["tune_budget"] for r in mine} == {"4"}  # the same budget for the baseline and alpha
        assert all(r.results["best_val"] is not None for r in mine)


def test_the_script_rewrites_only_its_block(repo_root: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nstale\n{END}\noutro\n")
    write_readme(readme, repo_root / RECORDS)
    out = readme.read_text()
    assert out.startswith("intro\n") and out.endswith(f"{END}\noutro\n") and "stale" not in out
