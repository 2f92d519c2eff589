"""`ssmbench data list`, `data show` and `data prepare`: every adapter, whether its data is present, its options,
and preparing it."""

from __future__ import annotations

import json
import time
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ssmbench import safe_read
from ssmbench.data.layout import MARKER
from ssmbench.errors import RecipeError, SSMBenchError

# adapter -> (default folder under the data root that must exist, how to get the data)
HOW = {
    "listops": ("lra_release/listops-1000", "LRA release, or `ssmbench data generate listops --n 96000 --out data/lra_release/listops-1000`"),
    "text": ("aclImdb", "aclImdb_v1.tar.gz from ai.stanford.edu/~amaas/data/sentiment"),
    "retrieval": ("lra_release/tsv_data", "LRA release (tsv_data/new_aan_pairs.*.tsv)"),
    "image": ("cifar-10-batches-py", "cifar-10-python.tar.gz from cs.toronto.edu/~kriz"),
    "scifar": ("cifar-10-batches-py", "cifar-10-python.tar.gz from cs.toronto.edu/~kriz"),
    "pathfinder": ("lra_release/pathfinder32/curv_contour_length_14", "LRA release, or `ssmbench data generate pathfinder --resolution 32 --n 200000 --out data/lra_release`"),
    "pathx": ("lra_release/pathfinder128/curv_contour_length_14", "LRA release, or `ssmbench data generate pathfinder --resolution 128 --n 200000 --out data/lra_release`"),
    "speech": ("SpeechCommands/speech_commands_v0.02", "speech_commands_v0.02.tar.gz, or `ssmbench data synth-speech --words 35 --out data/SpeechCommands/speech_commands_v0.02`"),
    "smnist": ("MNIST/raw", "torchvision download (`data.download: true`); without it the embedded real subset is used"),
}


def cached_sizes(root: Path, name: str) -> dict | None:
    """Split sizes of the most recently prepared cache of `name`, if any."""
    metas = sorted((root / name / "prepared").glob("*/splits.json"), key=lambda p: p.stat().st_mtime)
    if not metas:
        return None
    try:
        return {split: v[0] for split, v in json.loads(safe_read.read_bytes(metas[-1], "record")).items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, safe_read.FileRefused):
        return None  # a damaged cache: shown as not prepared (loading it names the problem)


def present(folder: Path) -> bool:
    """A data folder counts as present when it holds at least one file (a failed download leaves it empty)."""
    return folder.is_dir() and any(f.is_file() for f in folder.rglob("*"))


def origin(folder: Path) -> str:
    if not folder.exists():
        return "-"
    marker = folder / MARKER
    if not (marker.exists() or marker.is_symlink()):
        return "official"
    try:
        return str(json.loads(safe_read.read_bytes(marker, "record")).get("source", "?"))
    except (OSError, ValueError, AttributeError, safe_read.FileRefused):
        return "?"


def download_size(name: str) -> str | None:
    """The size of `ssmbench data download NAME`: the archive and the extracted folder ("~" where estimated)."""
    from rich.filesize import decimal

    from ssmbench.data.sources import DOWNLOADS

    if name not in DOWNLOADS:
        return None
    s = DOWNLOADS[name]
    return f"{'' if s.archive.size else '~'}{decimal(s.archive.size or s.archive.approx)}+~{decimal(s.extracted)}"


def rows(root: Path) -> list[dict]:
    """One row per registered adapter: name, present, source, prepared sizes, description, how to get the data,
    and the download size (archive + extracted folder) of adapters with a public archive."""
    from ssmbench.registry import DATASETS

    out = []
    for name in DATASETS.names():
        adapter = DATASETS.get(name)
        rel, how = HOW.get(name, (None, "generated in memory by the adapter"))
        folder = root / rel if rel else None
        download = download_size(name)
        out.append({"name": name, "present": present(folder) if folder else True,
                    "source": origin(folder) if folder and present(folder) else "-" if folder else "synthetic",
                    "sizes": cached_sizes(root, name), "description": adapter.description,
                    "path": str(folder) if folder else "-", "download": download or "-",
                    "how": f"`ssmbench data download {name}`, or {how}" if download else how})
    return out


def prepare(name: str, root: str, source: str | None, overrides: list[str] = ()) -> dict:
    """Build (and so cache) adapter `name` with its default options, `source` and the `--set` overrides
    (`data.KEY=VALUE`, or `KEY=VALUE` for a data option); return sizes and timing."""
    from ssmbench.data import build_data
    from ssmbench.recipe import DataConfig, apply_overrides, validate_recipe

    data = {"name": name, "root": root}
    if source is not None:
        data["source"] = source
    sets = [o if o.startswith("data.") else f"data.{o}" for o in overrides]
    raw = apply_overrides({"name": "prepare", "data": data}, sets)
    try:
        recipe = validate_recipe(raw, f"data prepare {name}")
    except RecipeError as e:
        hint = f"give options with --set data.KEY=VALUE; `ssmbench data show {name}` lists them"
        fields = [p.split(":")[0].split(".") for p in e.problems]
        options = [f for f in fields if f[0] == "data" and len(f) > 1 and f[1] not in DataConfig.model_fields]
        raise RecipeError(e.source, e.problems + ([hint] if options else [])) from None
    t0 = time.perf_counter()
    bundle = build_data(recipe.data)
    return {"name": name, "sizes": bundle.sizes(), "seq_len": bundle.seq_len, "source": bundle.source,
            "provenance": bundle.provenance, "cache": bundle.facts.get("cache"),
            "seconds": round(time.perf_counter() - t0, 2)}


def list_text(root: Path) -> str:
    """The `ssmbench data list` table as text."""
    lines = [f"data root: {root}", f"{'name':<20} {'data':<8} {'source':<10} {'download':<18} {'prepared sizes':<26} "
                                   f"description"]
    for r in rows(root):
        sizes = "/".join(str(r["sizes"][s]) for s in ("train", "val", "test") if s in r["sizes"]) if r["sizes"] else "-"
        lines.append(f"{r['name']:<20} {'present' if r['present'] else 'missing':<8} {r['source']:<10} "
                     f"{r['download']:<18} {sizes:<26} {r['description']}")
        if not r["present"]:
            lines.append(f"{'':<20} expected at {r['path']}; get it: {r['how']}")
    lines.append("download: archive + extracted folder (~ estimated); `ssmbench data download NAME [--url MIRROR]`")
    lines.append("options of an adapter (types, defaults, descriptions): `ssmbench data show NAME`")
    return "\n".join(lines)


def type_name(annotation) -> str:
    """A field's type as a recipe writer reads it: `int`, `float | null`, `'auto' | 'idx' | 'embedded'`."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if typing.get_origin(annotation) is typing.Annotated:
        return type_name(args[0])
    return getattr(annotation, "__name__", str(annotation))


def option_rows(model: type[BaseModel]) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) of every field of an options model; default "required" if none."""
    out = []
    for key, f in model.model_fields.items():
        if f.default is PydanticUndefined and f.default_factory is None:
            default = "required"
        else:
            default = json.dumps(f.default_factory() if f.default_factory else f.default)
        out.append((key, type_name(f.annotation), default, f.description or ""))
    return out


def show_text(name: str, root: Path) -> str:
    """`ssmbench data show NAME`: the adapter's description, data folder and state, and every option."""
    from ssmbench.recipe import DataConfig
    from ssmbench.registry import DATASETS, UnknownNameError

    try:
        adapter = DATASETS.get(name)  # loads the built-in adapters and the plugins
    except UnknownNameError as e:
        raise SSMBenchError(f"data show: {e}") from None
    (row,) = [r for r in rows(root) if r["name"] == name]
    lines = [f"{name}: {adapter.description}",
             f"data: {'present' if row['present'] else 'missing'} at {row['path']} (source {row['source']}); "
             f"get it: {row['how']}"]
    for title, model in (("options of every dataset", DataConfig), (f"options of {name}", adapter.Options)):
        fields = [r for r in option_rows(model) if r[0] != "name"]
        lines.append(f"{title} (recipe `data:` section, or --set data.KEY=VALUE):")
        lines += [f"  {k:<20} {t:<34} {d:<10} {desc}" for k, t, d, desc in fields] or ["  (none)"]
    return "\n".join(lines)
