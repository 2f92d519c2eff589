"""Every sweep compares what it says: variants differ from the baseline only in the fields they name."""

from pathlib import Path

import pytest
import yaml

from ssmbench.errors import RecipeError
from ssmbench.sweep import expand, format_differences, run_sweep, variant_differences

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = [p for p in sorted(ROOT.glob("recipes/**/*.yaml")) if "grid" in (yaml.safe_load(p.read_text()) or {})]


def test_the_repository_has_sweeps():
    assert {p.name for p in SWEEPS} >= {"lra-table.yaml", "tdi-data-efficiency.yaml", "smnist-table.yaml"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_variants_differ_from_the_baseline_only_in_named_fields(path):
    diffs = variant_differences(path, expand(path))
    assert diffs, f"{path}: no variant compared with the baseline"
    unnamed = {(d.task, d.variant): d.unnamed for d in diffs if d.unnamed}
    assert not unnamed, f"{path}: fields changed but not named by the variant: {unnamed}"


def test_tdi_data_efficiency_changes_only_the_first_layer_init():
    path = ROOT / "recipes" / "sweeps" / "tdi-data-efficiency.yaml"
    diffs = variant_differences(path, expand(path))
    assert {d.task for d in diffs} == {"listops", "image", "pathfinder"}
    assert all(d.variant == "tdi" and d.fields == {"init.name": ("s4d-lin", "tdi")} for d in diffs)


TINY = {"name": "tiny", "data": {"name": "smnist", "permute": False},
        "model": {"d_model": 4, "n_layers": 1, "ssm": {"d_state": 4}},
        "train": {"max_steps": 2, "batch_size": 4, "threads": 1}}


def write(tmp_path, variants, **grid):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY))
    wide = {**TINY, "model": {**TINY["model"], "n_layers": 2}, "init": {"alpha": 2.0}}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(wide))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "recipe": "base.yaml", "runs_dir": str(tmp_path / "runs"),
                                    "grid": {"variants": variants, **grid}}, sort_keys=False))
    return path


def test_unnamed_differences_are_flagged_and_printed_by_the_dry_run(tmp_path, capsys):
    path = write(tmp_path, {"base": {}, "alpha": {"set": ["init.alpha=3.0", "model.ssm.lr.C=0.01"]},
                            "other": {"recipe": "other.yaml", "changes": ["init"]}})
    diffs = {d.variant: d for d in variant_differences(path, expand(path))}
    assert diffs["alpha"].fields == {"init.alpha": (1.0, 3.0), "model.ssm.lr.C": (None, 0.01)}
    assert diffs["alpha"].unnamed == []
    assert diffs["other"].fields == {"init.alpha": (1.0, 2.0), "model.n_layers": (1, 2)}
    assert diffs["other"].unnamed == ["model.n_layers"]  # `changes: [init]` covers init.alpha only
    run_sweep(path, dry_run=True)
    out = capsys.readouterr().out
    assert "variant=alpha vs baseline base: 2 fields differ\n    init.alpha: 1.0 -> 3.0\n" in out
    assert "    model.n_layers: 1 -> 2   [not named by the variant]" in out
    assert format_differences(list(diffs.values())).count("[not named") == 1


def test_baseline_must_be_a_variant(tmp_path):
    path = write(tmp_path, {"base": {}, "alpha": {"set": ["init.alpha=3.0"]}}, baseline="alpha")
    assert {d.variant: d.baseline for d in variant_differences(path, expand(path))} == {"base": "alpha"}
    path = write(tmp_path, {"base": {}}, baseline="s4d")
    with pytest.raises(RecipeError, match="grid.baseline: 's4d' is not a variant of the grid"):
        expand(path)
