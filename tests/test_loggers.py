"""Training logs as a user sees them: plain lines when the output is a file, TensorBoard events read back from
the run directory, W&B offline (without network), all checked against metrics.jsonl."""

import json
import math
from pathlib import Path

import pytest
import yaml

from killpoint import TINY, cli_run, one_thread, run_dir, tiny  # noqa: F401 (fixture)
from ssmbench import runs
from ssmbench.train.engine import train


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from the TensorBoard event files in `folder`, as TensorBoard itself loads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def metric_rows(folder: Path, split: str) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in runs.read_jsonl(folder / runs.METRICS) if r["split"] == split]


def close(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    return [s for s, _ in a] == [s for s, _ in b] and all(math.isclose(x, y, rel_tol=1e-6) for (_, x), (_, y) in zip(a, b))


def test_train_to_a_file_prints_plain_lines_and_writes_tensorboard_events(tmp_path, one_thread):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    code, out = cli_run("train", str(recipe), "--runs-dir", str(tmp_path / "runs"), "--set", "train.log_every=4")
    assert code == 0, out
    lines = [ln for ln in out.splitlines() if ln.startswith("tiny step")]
    assert [ln.split(":")[0] for ln in lines] == [
        "tiny step 4/12 epoch 0", "tiny step 4/12 val", "tiny step 8/12 epoch 0", "tiny step 8/12 val",
        "tiny step 12/12 epoch 0", "tiny step 12/12 val", "tiny step 12/12 test"], out
    assert all(w in lines[0] for w in ("loss", "acc", "lr", "samples/s", "elapsed", "ETA")), lines[0]
    run = run_dir(tmp_path / "runs")
    got = scalars(run)
    for split in ("train", "val", "test"):
        assert close(got[f"{split}/loss"], metric_rows(run, split)), split
    assert [s for s, _ in got["progress/lr"]] == [4, 8, 12]
    assert "best val accuracy" not in out  # no progress bar in a file


def test_resumed_run_has_each_step_once_in_tensorboard(tmp_path, one_thread):
    class Interrupt(Exception):
        pass

    def stop_at_7(trainer):
        if trainer.progress.step == 7:  # after the checkpoint of step 6 (checkpoint_every 2), before step 8's
            raise Interrupt

    recipe = tiny(log_every=1)
    with pytest.raises(Interrupt):
        train(recipe, runs_root=tmp_path, quiet=True, log=lambda *_: None, on_step=stop_at_7)
    run = run_dir(tmp_path)
    assert [s for s, _ in scalars(run)["progress/loss"]] == list(range(1, 8))
    train(resume=run, quiet=True, log=lambda *_: None)
    got = scalars(run)
    assert [s for s, _ in got["progress/loss"]] == list(range(1, 13))  # step 7 once: from the resumed process
    assert close(got["val/loss"], metric_rows(run, "val")) and [s for s, _ in got["val/loss"]] == [4, 8, 12]


def wandb_history(run: Path) -> list[dict]:
    """The history rows of the offline W&B run under `run`, read from its .wandb file (a LevelDB-style log of
    protobuf records: a 7-byte file header, 32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, part, rows = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        part += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
            part = b""
    return rows


def test_wandb_offline_logs_the_metrics(tmp_path, monkeypatch, one_thread):
    pytest.importorskip("wandb", reason="W&B is the optional extra ssmbench[wandb]")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    code, out = cli_run("train", str(recipe), "--runs-dir", str(tmp_path / "runs"), "--set", "train.loggers=[wandb]")
    assert code == 0, out
    run = run_dir(tmp_path / "runs")
    assert not list(run.glob("events.out.tfevents.*"))  # only the loggers asked for
    rows = wandb_history(run)
    val = [(r["_step"], r["val/loss"]) for r in rows if "val/loss" in r]
    assert close(val, metric_rows(run, "val"))


def test_unknown_or_missing_logger_is_a_recipe_error(tmp_path, monkeypatch):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    code, out = cli_run("train", str(recipe), "--set", "train.loggers=[csv]", "--runs-dir", str(tmp_path))
    assert code == 2 and "train.loggers.0" in out and "'tensorboard' or 'wandb'" in out, out
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code, out = cli_run("train", str(recipe), "--set", "train.loggers=[wandb]", "--runs-dir", str(tmp_path))
    assert code == 2 and "pip install wandb" in out and "Traceback" not in out, out
    assert not list(tmp_path.glob("tiny-*"))
