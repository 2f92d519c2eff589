"""docs/cli.md and docs/recipes.md are exactly what `make docs` (ssmbench/docs_gen.py) writes from the command
line and the recipe schema, so the references cannot drift from `--help` and recipe.py."""

import pytest

from ssmbench import docs_gen


@pytest.mark.parametrize("page", list(docs_gen.PAGES), ids=str)
def test_committed_reference_is_what_the_code_generates(repo_root, page):
    committed = (repo_root / page).read_text(encoding="utf-8") if (repo_root / page).is_file() else ""
    assert committed == docs_gen.PAGES[page](), f"{page} differs from what the code generates; run `make docs`"


def test_every_command_option_and_field_is_documented():
    cli, recipes = docs_gen.cli_markdown(), docs_gen.recipes_markdown()
    for words in ("## `ssmbench train`", "## `ssmbench data generate listops`", "| `--nproc` | INTEGER ≥ 1 | `1` |",
                  "| `--set` | KEY=VALUE (repeatable) |", "| `--quiet`, `-q` | flag | false |"):
        assert words in cli, words
    for words in ("| `model.ssm.dt_max` | float | `0.1` | > 0, ≤ 10 |".replace(">", "&gt;"),
                  "| `train.loggers` | list of 'tensorboard' \\| 'wandb' | `[\"tensorboard\"]` |",
                  "### `smnist`", "| `data.permute` | bool | required |"):
        assert words in recipes, words
    assert "|  |\n" not in recipes.replace("| section |  |  |", ""), "a field without a description"


def test_markdown_escaping():
    assert docs_gen.md("runs/<name>/ and `a|<b>`\n  *.yaml") == "runs/&lt;name&gt;/ and `a\\|<b>` \\*.yaml"
    assert docs_gen.anchor("`ssmbench data prepare`") == "ssmbench-data-prepare"


def test_plugins_of_this_machine_are_left_out(monkeypatch):
    from ssmbench.registry import DATASETS

    class Outside:
        __module__ = "my_plugin"
        description = "not part of ssmbench"

    monkeypatch.setitem(DATASETS._items, "zz-outside", Outside)
    assert "zz-outside" in DATASETS.names() and "zz-outside" not in docs_gen.recipes_markdown()
