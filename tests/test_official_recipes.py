"""The recipes follow their sources: values pinned by tests/data/official_configs.yaml, headers name the source."""

import re
from pathlib import Path

import pytest
import yaml

from ssmbench.recipe import load_recipe
from ssmbench.recipe import flatten

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = yaml.safe_load((ROOT / "tests" / "data" / "official_configs.yaml").read_text())["recipes"]
SOURCED = sorted(ROOT.glob("recipes/lra/*/*.yaml")) + sorted(ROOT.glob("recipes/speech/*.yaml"))


def resolved_value(flat: dict, key: str):
    """A dotted field of the resolved recipe, or the mapping of every field below it."""
    if key in flat:
        return flat[key]
    below = {k[len(key) + 1:]: v for k, v in flat.items() if k.startswith(key + ".")}
    assert below, f"{key} is not a recipe field"
    return below


@pytest.mark.parametrize("rel", sorted(OFFICIAL))
def test_recipe_matches_its_official_values(rel):
    entry = OFFICIAL[rel]
    flat = flatten(load_recipe(ROOT / "recipes" / rel).to_dict())
    wrong = {k: (resolved_value(flat, k), v) for k, v in entry["values"].items() if resolved_value(flat, k) != v}
    assert not wrong, f"recipes/{rel} differs from {entry['source']} in (recipe, source): {wrong}"


@pytest.mark.parametrize("path", SOURCED, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_recipe_header_names_its_source(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Source: "), f"{path}: the first line must be '# Source: <repository> <file>'"
    rel = str(path.relative_to(ROOT / "recipes"))
    if rel in OFFICIAL:
        assert OFFICIAL[rel]["source"] in first, f"{path}: header names another source than {OFFICIAL[rel]['source']}"


def test_every_sourced_recipe_of_a_pinned_kind_is_pinned():
    pinned = {p for p in OFFICIAL}
    for path in SOURCED:
        rel = str(path.relative_to(ROOT / "recipes"))
        if path.stem in ("s4d", "alpha-beta", "tdi", "s4", "dss", "s5", "lru"):
            assert rel in pinned, f"recipes/{rel} has no entry in tests/data/official_configs.yaml"


@pytest.mark.parametrize("path", sorted(ROOT.glob("recipes/**/*.yaml")), ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_comments_mention_no_issue_numbers(path):
    comments = "\n".join(line for line in path.read_text().splitlines() if line.lstrip().startswith("#"))
    assert not re.search(r"\bissues? #?\d", comments, re.IGNORECASE), path
