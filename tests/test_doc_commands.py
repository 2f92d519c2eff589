"""Every command a reader can copy from the README and the hand-written docs works: each line of a ```bash block
is run here (cheap ones in the fast suite, the rest under `make test-slow`), is named in COVERED with what runs it,
or ends with a comment that says what it needs that a test machine lacks:

    ssmbench train recipes/quickstart.yaml --nproc 4   # needs 4 GPUs

(marks: `# needs a GPU`, `# needs N GPUs`, `# needs a cluster ...`, `# needs a Slurm cluster`, `# needs a Ray
cluster`, `# needs the network`). The commands run in a scratch folder that holds the repository's recipes/ and
benchmarks/ and an empty data/, so whatever they write (runs/, data, plots) stays out of the repository.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from killpoint import cli_run

REPO = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "ARCHITECTURE.md", "benchmarks/README.md", "recipes/README.md",
         *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))]
NEEDS = re.compile(r"#\s*needs (a GPU|\d+ GPUs|a cluster\b.*|a Slurm cluster|a Ray cluster|the network)")

FAST = [  # run in-process in the fast suite
    "ssmbench components",
    "ssmbench data list",
    "ssmbench data show smnist",
    "ssmbench train recipes/quick/smnist/zero-real.yaml --set train.lr=0.004 --print-config",
    "ssmbench report benchmarks/results/smnist-table --plots runs/plots --runs-csv runs/runs.csv",
    "ssmbench sweep recipes/quick/smnist-table.yaml --dry-run",
    "ssmbench --import my_data data show sign-of-sum",
    "ssmbench tune recipes/tune/smnist-alpha.yaml --dry-run",
    "ssmbench doctor",
]
SLOW = [  # run in this order by a shell under `make test-slow` (minutes on a CPU)
    "ssmbench train recipes/quick/smnist/zero-real.yaml --set seed=1",
    "ssmbench train --resume runs/quick-smnist-zero-real-*/",
    "ssmbench init-tdi --dataset smnist --set permute=false --steps 200 --out runs/tdi/smnist",
    "ssmbench data generate listops --n 2000 --out data/lra_release/listops-1000",
    "ssmbench data prepare listops --root data",
    "ssmbench data synth-speech --words 10 --speakers 2",
    "ssmbench bench --lengths 1024 --blocks s4d --reps 1",
    "ssmbench bench --blocks s4d,s4,dss,s5,lru --lengths 1024,4096 --batch 2 --d-model 64 --d-state 64 --threads 1",
    "ssmbench smoke recipes/quick",
    "ssmbench sweep recipes/quick/smnist-table.yaml --jobs 2",
    "ssmbench --import my_data train recipes/quickstart.yaml --set data='{name: sign-of-sum, length: 128}'",
    "TRITON_INTERPRET=1 ssmbench bench --blocks s4d --lengths 256 --batch 2 --d-model 16 --ops-only --bidirectional",
    "ssmbench tune recipes/tune/smnist-alpha.yaml --jobs 2",
    "ssmbench report runs/tune-example",
]
COVERED = {  # run elsewhere
    "make demo": "`make smoke` trains recipes/quickstart.yaml, the recipe `make demo` trains",
    "make test": "the fast test suite itself",
    "make install": "the first step of every make target, so of `make test` in .ci/run",
    'pip install -e ".[bench]"': "`make install` installs the bench extra with the others",
    "make tune-example": "it made benchmarks/results/tune-example/, and tests/test_tune_example.py holds the "
                         "docs block to those records; its sMNIST half is `ssmbench tune` in SLOW",
}


def shell_commands(text: str) -> list[tuple[str, str]]:
    """(command, trailing comment) of every command line in the ```bash blocks of a Markdown text; continued lines
    (ending in a backslash) are joined; comment lines (#SBATCH ...) are skipped."""
    out, block, pending = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            block = line.strip() in ("```bash", "```sh", "```shell")
            continue
        if not block or not (pending or line.strip()) or line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line, pending = pending + line, ""
        code, _, comment = line.partition(" # ")
        out.append((" ".join(code.split()), comment.strip()))
    return out


def documented() -> list[tuple[str, str, str]]:
    return [(page, cmd, comment) for page in PAGES
            for cmd, comment in shell_commands((REPO / page).read_text(encoding="utf-8"))]


def python_example(page: str) -> str:
    """The ```python block of a docs page (docs/plugins.md's my_data.py)."""
    text = (REPO / page).read_text(encoding="utf-8")
    return text.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """A working directory like a clone's, whose writes stay out of the repository."""
    for name in ("recipes", "benchmarks"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "data").mkdir()
    (tmp_path / "my_data.py").write_text(python_example("docs/plugins.md"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_every_command_is_run_covered_or_marked():
    unchecked = [f"{page}: {cmd}" for page, cmd, comment in documented()
                 if cmd not in FAST + SLOW and cmd not in COVERED and not NEEDS.match(f"# {comment}")]
    assert not unchecked, ("commands in the docs that no test runs; add each to FAST or SLOW in "
                           "tests/test_doc_commands.py, or mark it `# needs a GPU` (a cluster, the network):\n"
                           + "\n".join(unchecked))
    shown = {cmd for _, cmd, _ in documented()}
    stale = [c for c in FAST + SLOW + list(COVERED) if c not in shown]
    assert not stale, f"commands listed here that no page shows any more: {stale}"
    assert "make demo" in shown and "make test" in shown


def test_the_cheap_commands_work_and_write_only_under_runs(scratch):
    for cmd in FAST:
        if "--import" in cmd:  # a plugin registers for good: in a process of its own, not in the test process
            proc = subprocess.run([sys.executable, "-m", "ssmbench", *shlex.split(cmd)[1:]], cwd=scratch, text=True,
                                  capture_output=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
            code, out = proc.returncode, proc.stdout + proc.stderr
        else:
            code, out = cli_run(*shlex.split(cmd)[1:])
        assert code == 0 and "error:" not in out and "Warning" not in out, f"{cmd}\n{out}"
    assert (scratch / "runs" / "runs.csv").is_file() and list((scratch / "runs" / "plots").glob("*.png"))
    assert sorted(p.name for p in scratch.iterdir()) == ["benchmarks", "data", "my_data.py", "recipes", "runs"]


@pytest.mark.slow
def test_the_long_commands_work_in_order(scratch):
    bin_dir = scratch / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssmbench").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m ssmbench \"$@\"\n")
    (bin_dir / "ssmbench").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(scratch)])}
    for cmd in SLOW:
        if "synth-speech" in cmd and not (shutil.which("espeak-ng") and shutil.which("flite")):
            continue  # apt packages that .ci/run installs
        proc = subprocess.run(["bash", "-c", cmd], cwd=scratch, env=env, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (scratch / "runs" / "bench.json").is_file() and (scratch / "runs" / "tdi" / "smnist.pt").is_file()
