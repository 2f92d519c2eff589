"""`ssmbench report` (and the sweep's run index) on hostile runs folders: every damaged or strange file is skipped
with a one-line warning naming it, never a traceback, hang or unbounded read; plus a hypothesis fuzz over the
contents of run-record files and over damaged checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssmbench import runs
from ssmbench.errors import CheckpointError, SSMBenchError
from ssmbench.report import report
from ssmbench.report.records import REAL_TRANSFORMS, read_runs
from ssmbench.sweep import index_runs
from ssmbench.train import checkpoint

from test_report import write_run

DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "9" * 5000

# name -> (file, content) written over a good finished run; each must make the report skip that run.
DAMAGED = {
    "bad-bytes": (runs.RESULTS, b'{"status": "finished", "test": {"loss": \xff}}'),
    "results-list": (runs.RESULTS, b"[1, 2]"),
    "results-no-test": (runs.RESULTS, b'{"status": "finished"}'),
    "test-a-list": (runs.RESULTS, b'{"status": "finished", "test": [0.5]}'),
    "huge-number": (runs.RESULTS, f'{{"status": "finished", "test": {{"loss": {HUGE_INT}}}}}'.encode()),
    "deep-results": (runs.RESULTS, DEEP.encode()),
    "loss-400-digits": (runs.RESULTS, f'{{"status": "finished", "test": {{"loss": {HUGE_INT[:400]}}}}}'.encode()),
    "task-unknown": (runs.RESULTS, b'{"status": "finished", "task": 7, "test": {"loss": 1.0}}'),
    "tags-a-list": (runs.RECIPE, b"name: x\ntags: [a, b]\ndata: {name: smnist}\n"),
    "data-a-string": (runs.RECIPE, b"name: x\ndata: smnist\n"),
    "real-transform": (runs.RECIPE, b"name: x\ndata: {name: smnist}\nmodel: {ssm: {real_transform: cube}}\n"),
    "seed-huge": (runs.RECIPE, f"name: x\nseed: {HUGE_INT}\ndata: {{name: smnist}}\n".encode()),
    "deep-recipe": (runs.RECIPE, DEEP.encode()),
    "recipe-bytes": (runs.RECIPE, b"name: \xff\xfe\n"),
    "env-a-list": (runs.ENV, b"[]"),
    "env-init-list": (runs.ENV, b'{"init": []}'),
    "env-tdi-strings": (runs.ENV, b'{"init": {"tdi": {"task_spectrum": ["a"]}}}'),
}


def special(d: Path, kind: str) -> None:
    """Replace a file of run `d` by a FIFO, a link to a device, or a huge sparse file."""
    if kind == "fifo-results":
        (d / runs.RESULTS).unlink()
        os.mkfifo(d / runs.RESULTS)
    elif kind == "zero-results":
        (d / runs.RESULTS).unlink()
        (d / runs.RESULTS).symlink_to("/dev/zero")
    elif kind == "urandom-metrics":
        (d / runs.METRICS).unlink(missing_ok=True)
        (d / runs.METRICS).symlink_to("/dev/urandom")
    elif kind == "sparse-metrics":
        with open(d / runs.METRICS, "wb") as f:
            f.truncate(3 * 2**30)
    elif kind == "fifo-lock":
        os.mkfifo(d / runs.LOCK)


SPECIAL = ["fifo-results", "zero-results", "urandom-metrics", "sparse-metrics"]


def test_real_transforms_match_the_model() -> None:
    from ssmbench.models.s4d import REAL_TRANSFORMS as MODEL

    assert set(REAL_TRANSFORMS) == set(MODEL)


def test_every_hostile_run_is_skipped_with_a_warning(tmp_path: Path, capsys) -> None:
    root = tmp_path / "runs"
    write_run(root, "good", "s4d", "smnist", 0, acc=0.9)
    for name, (file, content) in DAMAGED.items():
        d = write_run(root, name, "s4d", "smnist", 1, acc=0.1)
        (d / file).write_bytes(content)
    for kind in SPECIAL:
        special(write_run(root, kind, "s4d", "smnist", 1, acc=0.1), kind)
    special(write_run(root, "fifo-lock", "s4d", "smnist", 2, status=None), "fifo-lock")
    warnings: list[str] = []
    records = read_runs([root], warn=warnings.append)
    assert sorted(r.name for r in records) == ["fifo-lock", "good"]  # fifo-lock: a .lock FIFO is not a lock
    skipped = [w for w in warnings if w.endswith("run skipped")]
    assert len(skipped) == len(DAMAGED) + len(SPECIAL)
    for name in [*DAMAGED, *SPECIAL]:
        (line,) = [w for w in skipped if f"/{name}/" in w]
        assert "\n" not in line and str(root / name) in line
    text, _ = report([root])
    assert "90.00 (1)" in text
    assert "run skipped" in capsys.readouterr().err


def test_a_huge_sparse_metrics_file_is_not_read_into_memory(tmp_path: Path) -> None:
    """The report process's peak memory (VmHWM, which exec resets) stays far below the file's 3 GB."""
    special(write_run(tmp_path, "r", "s4d", "smnist", 0, acc=0.5), "sparse-metrics")
    code = ("import re, sys; from ssmbench.report.records import read_runs; assert read_runs([sys.argv[1]]) == []; "
            "print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "over the 268,435,456-byte limit" in proc.stderr, proc.stderr
    assert int(proc.stdout) * 1024 < 500 * 2**20


def test_corrupt_metric_lines_and_a_truncated_init_pt_are_reported(tmp_path: Path) -> None:
    from ssmbench.report.records import parameter_change

    d = write_run(tmp_path, "r", "s4d", "smnist", 0, acc=0.5, val=[(1, 1.0, 0.5), (2, 0.9, 0.6)])
    with open(d / runs.METRICS, "ab") as f:
        f.write(b'[1]\n"text"\n{"step": "x", "split": "val"}\n{"step": 3, "split": "val", "loss": [1]}\n\xff\n'
                b'{"step": 4, "split": "val", "loss": 1' + b"0" * 400 + b'}\n{"st')
    warnings: list[str] = []
    (record,) = read_runs([tmp_path], warn=warnings.append)
    assert [r["step"] for r in record.metrics] == [1, 2]
    assert warnings == [f"{d / runs.METRICS}: 7 corrupt line(s) dropped (torn by a crash, or damaged); 2 kept"]
    checkpoint.save(d / runs.CHECKPOINTS / "init.pt", {"model": {}})
    checkpoint.save(d / runs.CHECKPOINTS / "last.pt", {"model": {}})
    data = (d / runs.CHECKPOINTS / "init.pt").read_bytes()
    (d / runs.CHECKPOINTS / "init.pt").write_bytes(data[:-10])
    warnings.clear()
    assert parameter_change(record, warn=warnings.append) is None
    assert len(warnings) == 1 and "init.pt: checksum mismatch" in warnings[0] and "parameter-change" in warnings[0]


def test_sweep_index_ignores_hostile_recipes(tmp_path: Path) -> None:
    d = write_run(tmp_path, "a", "s4d", "smnist", 0, acc=0.5)
    (d / runs.RECIPE).unlink()
    os.mkfifo(d / runs.RECIPE)
    e = write_run(tmp_path, "b", "s4d", "smnist", 0, acc=0.5)
    (e / runs.RECIPE).write_bytes(DEEP.encode())
    assert index_runs(tmp_path) == {}


# --------------------------------------------------------------------------------------------------
# Fuzz: arbitrary JSON/YAML values and bytes in every record file; damaged checkpoints

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)
FIELDS = ["status", "test", "task", "name", "error", "data_source", "tags", "data", "seed", "model", "init", "step",
          "split", "loss", "accuracy"]
record_objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)
file_contents = st.one_of(
    st.binary(max_size=64),
    record_objects.map(lambda o: json.dumps(o).encode()),
    json_values.map(lambda o: json.dumps(o).encode()),
    record_objects.map(lambda o: yaml.safe_dump(o).encode()),
    st.lists(record_objects.map(json.dumps) | st.text(max_size=20), max_size=5).map(lambda ls: "\n".join(ls).encode()),
)
FUZZ_EXAMPLES = int(os.environ.get("SSMBENCH_FUZZ_EXAMPLES", "40"))


record_files = st.fixed_dictionaries({}, optional={f: file_contents for f in (runs.RECIPE, runs.ENV, runs.RESULTS,
                                                                               runs.METRICS)})
SHORT = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LONG = settings(SHORT, max_examples=2000)


@SHORT
@given(files=record_files)
def test_fuzzed_run_records_never_raise(tmp_path_factory, files) -> None:
    check_record_files(tmp_path_factory, files)


@pytest.mark.slow
@LONG
@given(files=record_files)
def test_fuzzed_run_records_never_raise_long(tmp_path_factory, files) -> None:
    check_record_files(tmp_path_factory, files)


def check_record_files(tmp_path_factory, files: dict[str, bytes]) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    d = write_run(root, "r", "s4d", "smnist", 0, acc=0.5)
    for name, content in files.items():
        (d / name).write_bytes(content)
    try:
        text, _ = report([root])  # any other exception is a defect
    except SSMBenchError as e:  # the one run was skipped: one line
        assert "no usable run directories" in str(e) and "\n" not in str(e)
    else:
        assert "###" in text


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    checkpoint.save(path, {"model": {"w": torch.arange(6.0)}, "progress": {"step": 3}})
    return path.read_bytes()


@SHORT
@given(data=st.data())
def test_fuzzed_checkpoints_raise_checkpoint_error(tmp_path_factory, good_checkpoint, data) -> None:
    check_damaged_checkpoint(tmp_path_factory, good_checkpoint, data)


@pytest.mark.slow
@LONG
@given(data=st.data())
def test_fuzzed_checkpoints_raise_checkpoint_error_long(tmp_path_factory, good_checkpoint, data) -> None:
    check_damaged_checkpoint(tmp_path_factory, good_checkpoint, data)


def check_damaged_checkpoint(tmp_path_factory, good_checkpoint: bytes, data) -> None:
    """Truncations, flipped bytes and insertions anywhere in a checkpoint: always CheckpointError naming the
    file, never another exception."""
    raw = bytearray(good_checkpoint)
    edit = data.draw(st.sampled_from(["truncate", "flip", "insert"]))
    at = data.draw(st.integers(0, len(raw) - 1))
    if edit == "truncate":
        raw = raw[:at]
    elif edit == "flip":
        raw[at] ^= data.draw(st.integers(1, 255))
    else:
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    path = tmp_path_factory.mktemp("bad") / "last.pt"
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=str(path)):
        checkpoint.load(path)


def test_a_tdi_run_record_as_the_engine_writes_it_is_read(tmp_path: Path, capsys) -> None:
    """env.json's init.tdi mixes the artifact path, counts, losses and spectra: a valid record, not a damaged one."""
    tdi = {"artifact": "data/cache/tdi/smnist-bd820edfc823.pt", "samples": 30, "L": 784, "route": "encoder",
           "loss_before": 0.64, "loss_after": 0.0157, "seconds": 2.5, "peak_bin_task": 2, "peak_bin_before": 25,
           "peak_bin_after": 2, "task_spectrum": [1.0, 0.5], "model_spectrum_before": [0.2, 0.1],
           "model_spectrum_after": [0.9, 0.4]}
    write_run(tmp_path, "tdi-run", "tdi", "smnist", acc=0.9, env_extra={"init": {"tdi": tdi}})
    (record,) = read_runs([tmp_path])
    assert record.finished and record.env["init"]["tdi"]["artifact"] == tdi["artifact"]
    assert "warning" not in capsys.readouterr().err
