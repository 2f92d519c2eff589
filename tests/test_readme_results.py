"""The README's claims table and docs/results.md's tables are exactly what `make results` (ssmbench/readme_tables.py)
writes from the committed run records in benchmarks/results/, so no figure in them can go stale or be edited by hand;
records made by other code are trained again; each claim's verdict follows its rule; the README stays short."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ssmbench import one_pole, runs
from ssmbench.readme_tables import (CHANGES, CLAIMS, CLAIMS_BLOCK, FAILS, HOLDS, ONE_POLE, PAGE, README, RECORDS,
                                    SWEEPS, Claim, begin, end, judge, move_stale, render, render_claims,
                                    render_one_pole, replace_block, sweep_command, write_pages)
from ssmbench.report.records import read_runs
from ssmbench.report.tables import tidy_csv


def block_of(text: str, name: str) -> str:
    assert text.count(begin(name)) == 1 and text.count(end(name)) == 1, f"the page lacks the markers of {name}"
    return begin(name) + text.split(begin(name))[1].split(end(name))[0] + end(name)


@pytest.mark.parametrize("name", SWEEPS)
def test_readme_block_and_csv_are_what_the_records_give(repo_root: Path, monkeypatch, name: str) -> None:
    monkeypatch.chdir(repo_root)  # the records are read (and named in the tables) relative to the repository
    block = block_of(PAGE.read_text(encoding="utf-8"), name)
    records = read_runs([RECORDS / name])
    assert records and all(r.finished for r in records), f"no finished records in {RECORDS / name}; run `make results`"
    assert block == render(name, RECORDS / name), f"{PAGE}'s {name} block is stale or hand-edited; run `make results`"
    assert f"`{sweep_command(name)}`" in block and "| variant |" in block
    assert (RECORDS / f"{name}.csv").read_text(encoding="utf-8") == tidy_csv(records)
    versions = {r.env.get("code_version") for r in records}
    assert len(versions) == 1 and None not in versions, f"{name}: records of several code versions: {versions}"
    seeds = {}
    for r in records:
        seeds.setdefault((r.label(), r.train_fraction), set()).add(r.seed)
    assert all(len(s) >= 3 for s in seeds.values()), f"{name}: fewer than 3 seeds in {seeds}"


def test_claims_block_is_what_the_records_give(repo_root: Path, monkeypatch) -> None:
    monkeypatch.chdir(repo_root)
    block = block_of(README.read_text(encoding="utf-8"), CLAIMS_BLOCK)
    assert block == render_claims(), "README.md's claims block is stale or hand-edited; run `make results`"
    assert {c.sweep for c in CLAIMS} <= {*SWEEPS, ONE_POLE}
    rows = [line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| paper")]
    assert len(rows) == len(CLAIMS)
    assert all(row.rsplit(" | ", 1)[1].startswith((HOLDS, FAILS)) for row in rows), rows
    assert "no records of" not in block


def test_one_pole_block_is_what_the_record_gives(repo_root: Path, monkeypatch) -> None:
    monkeypatch.chdir(repo_root)
    block = block_of(PAGE.read_text(encoding="utf-8"), ONE_POLE)
    assert block == render_one_pole(RECORDS / ONE_POLE), f"{PAGE}'s one-pole block is stale; run `make results`"
    record = runs.read_json(RECORDS / ONE_POLE / one_pole.RESULTS)
    assert record["env"]["code_version"], "the one-pole record names no code version"
    for beta in record["betas"]:
        for group, inits in one_pole.GROUPS.items():
            mine = [t for t in record["trajectories"] if t["group"] == group and t["beta"] == beta]
            assert sorted(t["w0"] for t in mine) == sorted(inits) and len(inits) >= 3
            assert all(t["stationary"] for t in mine), f"beta {beta}, {group}: a flow stopped before a stationary point"
    # the record is what this code computes (one flow, recomputed)
    again = one_pole.train(one_pole.Problem(0.0), 30.0)
    kept = next(t for t in record["trajectories"] if t["w0"] == 30.0 and t["beta"] == 0.0)
    assert kept["w"] == pytest.approx(again["w"], abs=1e-6) and kept["ended"] == again["ended"]


def test_readme_stays_short(repo_root: Path) -> None:
    """Issue 27: the README is a user's page (<= ~200 lines); the per-sweep tables live in docs/results.md."""
    lines = (repo_root / README).read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move reference text to docs/"
    assert f"]({PAGE})" in "\n".join(lines)
    assert all(begin(n) not in "\n".join(lines) for n in [*SWEEPS, ONE_POLE])


def test_the_script_rewrites_only_its_blocks(repo_root: Path, tmp_path: Path) -> None:
    readme, page = tmp_path / "README.md", tmp_path / "results.md"
    records = tmp_path / "results"
    shutil.copytree(repo_root / RECORDS, records, ignore=shutil.ignore_patterns("*.csv"))

    def skeleton(names: list[str]) -> str:
        return "intro\n" + "".join(f"{begin(n)}\nstale-{n}\n{end(n)}\nbetween {n}\n" for n in names) + "outro\n"

    readme.write_text(skeleton([CLAIMS_BLOCK]))
    page.write_text(skeleton([*SWEEPS, ONE_POLE, "tune-example"]))
    write_pages(readme, page, records)
    for path, names in ((readme, [CLAIMS_BLOCK]), (page, [*SWEEPS, ONE_POLE])):
        out = path.read_text()
        assert out.startswith("intro\n") and out.endswith("outro\n") and "stale-" + names[0] not in out
        assert all(f"{end(n)}\nbetween {n}\n" in out for n in names)
    assert "stale-tune-example" in page.read_text()  # make tune-example's block is not this script's
    assert all((records / f"{n}.csv").is_file() for n in SWEEPS)
    before = readme.read_text(), page.read_text()
    write_pages(readme, page, records)
    assert (readme.read_text(), page.read_text()) == before  # the blocks are a function of the records
    with pytest.raises(SystemExit, match="needs exactly one"):
        replace_block("no markers", SWEEPS[0], "x")


def test_code_version_follows_the_sources(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    before = runs.code_version(tmp_path)
    assert runs.code_version(tmp_path) == before and len(before) == 16
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert runs.code_version(tmp_path) != before
    assert runs.environment("cpu")["code_version"] == runs.code_version()


def test_runs_of_other_code_are_moved_aside(tmp_path: Path) -> None:
    runs_dir, stale = tmp_path / "runs" / "sweep", tmp_path / "stale"
    for name, env in (("old", {"code_version": "0" * 16}), ("unversioned", {}), ("current", {"code_version": "abc"})):
        (runs_dir / name).mkdir(parents=True)
        (runs_dir / name / runs.ENV).write_text(json.dumps(env))
    (runs_dir / "setting-up").mkdir()  # no env.json yet: left alone
    assert move_stale("sweep", runs_dir, stale, "abc") == 2
    assert sorted(p.name for p in runs_dir.iterdir()) == ["current", "setting-up"]
    assert sorted(p.name for p in (stale / "sweep").iterdir()) == ["old", "unversioned"]
    assert move_stale("sweep", runs_dir, stale, "abc") == 0


def fake_run(root: Path, variant: str, seed: int, loss: float, fraction: float = 1.0, acc: float | None = None,
             change: dict | None = None) -> None:
    d = root / f"{variant}-s{seed}-f{fraction:g}"
    d.mkdir(parents=True)
    (d / runs.RECIPE).write_text(json.dumps({"name": d.name, "seed": seed, "tags": {"variant": variant},
                                             "data": {"name": "toy", "train_fraction": fraction}}))
    test = {"loss": loss, **({"accuracy": acc} if acc is not None else {})}
    (d / runs.RESULTS).write_text(json.dumps({"status": "finished", "task": "regression" if acc is None else
                                              "classification", "test": test}))
    if change is not None:
        (d / CHANGES).write_text(json.dumps(change))


def test_claim_rules(tmp_path: Path) -> None:
    for seed in range(3):
        fake_run(tmp_path, "a", seed, 1.0 + 0.1 * seed, change={"relative_change": {"Re(A)": 1.0, "Im(A)": 0.01,
                                                                                   "B*C": 0.5, "D": 0.3},
                                                                "beta_mean": 0.25})
        fake_run(tmp_path, "b", seed, 0.5 + 0.1 * seed)
        fake_run(tmp_path, "c", seed, 0.7 + 0.05 * seed)
        fake_run(tmp_path, "b", seed, 2.0, fraction=0.1)
        fake_run(tmp_path, "a", seed, 3.0, fraction=0.1)
    figures, verdict = judge(Claim("p", "t", "s", order=("a", "b")), tmp_path)
    assert verdict == HOLDS and figures == "test MSE: a 1.1 ± 0.1 (trained beta +0.25) → b 0.6 ± 0.1"
    assert judge(Claim("p", "t", "s", order=("b", "a")), tmp_path)[1] == FAILS
    assert judge(Claim("p", "t", "s", order=("a", "c", "b")), tmp_path)[1] == HOLDS
    assert judge(Claim("p", "t", "s", order=("a", "b"), fractions=(0.1, 1.0)), tmp_path)[1] == HOLDS
    assert judge(Claim("p", "t", "s", order=("b", "a"), fractions=(0.1,)), tmp_path)[1] == FAILS
    assert judge(Claim("p", "t", "s", best="b"), tmp_path) == ("test MSE: b 0.6 ± 0.1, c 0.75 ± 0.05, a 1.1 ± 0.1", HOLDS)
    assert judge(Claim("p", "t", "s", best="c"), tmp_path)[1] == FAILS
    assert judge(Claim("p", "t", "s", beats="c"), tmp_path)[1] == f"{HOLDS} for b; {FAILS} for a"
    figures, verdict = judge(Claim("p", "t", "s", still=("a", "Im(A)")), tmp_path)
    assert verdict == HOLDS and figures == "a, relative change over 3 runs: Re(A) 1, Im(A) 0.01, B*C 0.5, D 0.3"
    assert judge(Claim("p", "t", "s", still=("a", "D")), tmp_path)[1] == FAILS
    assert judge(Claim("p", "t", "s", order=("a", "lru")), tmp_path) == ("no records of lru; run `make results`", FAILS)
    pole = tmp_path / "pole"
    pole.mkdir()
    flows = [{"group": g, "beta": b, "w0": w0, "w": w, "ended": e} for g, b, w0, w, e in (
        ("near", 0.0, -40.0, -50.0, "weak mode"), ("right", 0.0, 20.0, 50.0, "strong mode"),
        ("across", 0.0, -15.0, -5.7, "noise band"), ("across", 1.0, -15.0, 50.0, "strong mode"))]
    (pole / one_pole.RESULTS).write_text(json.dumps({"trajectories": flows}))
    figures, verdict = judge(Claim("p", "t", ONE_POLE, ends=(("near", "right"), (0.0,), "mode on its side")), pole)
    assert verdict == HOLDS and figures.startswith("beta 0: w0 -40 → w -50.00 (weak mode)")
    assert judge(Claim("p", "t", ONE_POLE, ends=(("across",), (0.0,), "noise band")), pole)[1] == HOLDS
    assert judge(Claim("p", "t", ONE_POLE, ends=(("across",), (0.0,), "a mode")), pole)[1] == FAILS
    assert judge(Claim("p", "t", ONE_POLE, ends=(("across",), (1.0,), "a mode")), pole)[1] == HOLDS
    assert judge(Claim("p", "t", ONE_POLE, ends=(("across",), (0.5,), "a mode")), pole)[1] == FAILS
    acc = tmp_path / "acc"
    for seed in range(3):
        fake_run(acc, "s4d", seed, 1.0, acc=0.80)
        fake_run(acc, "x", seed, 1.0, acc=0.85 + 0.01 * seed)
    assert judge(Claim("p", "t", "s", order=("s4d", "x")), acc) == ("test acc: s4d 80.00 ± 0.00 % → x 86.00 ± 1.00 %",
                                                                    HOLDS)
