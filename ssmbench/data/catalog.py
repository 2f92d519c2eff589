"""`ssmbench data list` and `ssmbench data prepare`: every adapter, whether its data is present, and preparing it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ssmbench.data.layout import MARKER

# adapter -> (default folder under the data root that must exist, how to get the data)
HOW = {
    "listops": ("lra_release/listops-1000", "LRA release, or `ssmbench data generate listops --n 96000 --out data/lra_release/listops-1000`"),
    "text": ("aclImdb", "aclImdb_v1.tar.gz from ai.stanford.edu/~amaas/data/sentiment, or `download: true` (HF imdb)"),
    "retrieval": ("lra_release/tsv_data", "LRA release (tsv_data/new_aan_pairs.*.tsv)"),
    "image": ("cifar-10-batches-py", "cifar-10-python.tar.gz from cs.toronto.edu/~kriz"),
    "scifar": ("cifar-10-batches-py", "cifar-10-python.tar.gz from cs.toronto.edu/~kriz"),
    "pathfinder": ("lra_release/pathfinder32/curv_contour_length_14", "LRA release, or `ssmbench data generate pathfinder --resolution 32 --n 200000 --out data/lra_release`"),
    "pathx": ("lra_release/pathfinder128/curv_contour_length_14", "LRA release, or `ssmbench data generate pathfinder --resolution 128 --n 200000 --out data/lra_release`"),
    "speech": ("SpeechCommands/speech_commands_v0.02", "speech_commands_v0.02.tar.gz, or `ssmbench data synth-speech --words 35 --out data/SpeechCommands/speech_commands_v0.02`"),
    "smnist": ("MNIST/raw", "torchvision download (`download: true`); without it the embedded real subset is used"),
}


def cached_sizes(root: Path, name: str) -> dict | None:
    """Split sizes of the most recently prepared cache of `name`, if any."""
    metas = sorted((root / name / "prepared").glob("*/splits.json"), key=lambda p: p.stat().st_mtime)
    if not metas:
        return None
    return {split: v[0] for split, v in json.loads(metas[-1].read_text()).items()}


def origin(folder: Path) -> str:
    if not folder.exists():
        return "-"
    marker = folder / MARKER
    return json.loads(marker.read_text()).get("source", "?") if marker.is_file() else "official"


def rows(root: Path) -> list[dict]:
    """One row per registered adapter: name, present, source, prepared sizes, description, how to get the data."""
    from ssmbench.registry import DATASETS

    out = []
    for name in DATASETS.names():
        adapter = DATASETS.get(name)
        rel, how = HOW.get(name, (None, "generated in memory by the adapter"))
        folder = root / rel if rel else None
        present = folder.exists() if folder else True
        out.append({"name": name, "present": present, "source": origin(folder) if folder else "synthetic",
                    "sizes": cached_sizes(root, name), "description": adapter.description,
                    "path": str(folder) if folder else "-", "how": how})
    return out


def prepare(name: str, root: str, source: str | None, log=print) -> dict:
    """Build (and so cache) adapter `name` with its default options (and `source`); return sizes and timing."""
    from ssmbench.data import build_data
    from ssmbench.recipe import validate_recipe

    data = {"name": name, "root": root}
    if source is not None:
        data["source"] = source
    recipe = validate_recipe({"name": "prepare", "data": data}, f"data prepare {name}")
    t0 = time.perf_counter()
    bundle = build_data(recipe.data)
    return {"name": name, "sizes": bundle.sizes(), "seq_len": bundle.seq_len, "source": bundle.source,
            "provenance": bundle.provenance, "cache": bundle.facts.get("cache"),
            "seconds": round(time.perf_counter() - t0, 2)}


def list_text(root: Path) -> str:
    """The `ssmbench data list` table as text."""
    lines = [f"data root: {root}", f"{'name':<20} {'data':<8} {'source':<10} {'prepared sizes':<34} description"]
    for r in rows(root):
        sizes = "/".join(str(r["sizes"][s]) for s in ("train", "val", "test") if s in r["sizes"]) if r["sizes"] else "-"
        lines.append(f"{r['name']:<20} {'present' if r['present'] else 'missing':<8} {r['source']:<10} "
                     f"{sizes:<34} {r['description']}")
        if not r["present"]:
            lines.append(f"{'':<20} expected at {r['path']}; get it: {r['how']}")
    return "\n".join(lines)
