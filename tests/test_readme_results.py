"""The README's results tables are exactly what `make results` (ssmbench/readme_tables.py) writes from the
committed run records in benchmarks/results/, so no figure in them can go stale or be edited by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ssmbench.readme_tables import (README, RECORDS, SWEEPS, begin, end, render, replace_block, sweep_command,
                                    write_readme)
from ssmbench.report.records import read_runs
from ssmbench.report.tables import tidy_csv


@pytest.mark.parametrize("name", SWEEPS)
def test_readme_block_and_csv_are_what_the_records_give(repo_root: Path, monkeypatch, name: str) -> None:
    monkeypatch.chdir(repo_root)  # the records are read (and named in the tables) relative to the repository
    text = README.read_text(encoding="utf-8")
    assert text.count(begin(name)) == 1 and text.count(end(name)) == 1, f"README.md lacks the markers of {name}"
    block = begin(name) + text.split(begin(name))[1].split(end(name))[0] + end(name)
    records = read_runs([RECORDS / name])
    assert records and all(r.finished for r in records), f"no finished records in {RECORDS / name}; run `make results`"
    assert block == render(name, RECORDS / name), f"README.md's {name} block is stale or hand-edited; run `make results`"
    assert f"`{sweep_command(name)}`" in block and "| variant |" in block
    assert (RECORDS / f"{name}.csv").read_text(encoding="utf-8") == tidy_csv(records)


def test_the_script_rewrites_only_its_blocks(repo_root: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    records = tmp_path / "results"
    shutil.copytree(repo_root / RECORDS, records, ignore=shutil.ignore_patterns("*.csv"))
    text = "intro\n" + "".join(f"{begin(n)}\nstale-{n}\n{end(n)}\nbetween {n}\n" for n in SWEEPS) + "outro\n"
    readme.write_text(text)
    write_readme(readme, records)
    out = readme.read_text()
    assert out.startswith("intro\n") and out.endswith("outro\n") and "stale-" not in out
    assert all(f"{end(n)}\nbetween {n}\n" in out and (records / f"{n}.csv").is_file() for n in SWEEPS)
    write_readme(readme, records)
    assert readme.read_text() == out  # the blocks are a function of the records
    with pytest.raises(SystemExit, match="needs exactly one"):
        replace_block("no markers", SWEEPS[0], "x")
