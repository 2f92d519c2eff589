"""The one rule for reading a file ssmbench did not just write: run records, checkpoints, TDI artifacts, recipes,
sweep files and raw data files. Before any byte is parsed, the file must be

    a regular file        not a FIFO, device or folder; it is opened non-blocking, so a FIFO never hangs the reader
    inside its roots      when the caller names roots: the path with every symlink followed (`paths.escape`) lies
                          inside one of them (data files: the allowed roots of ssmbench/paths.py; run records and
                          checkpoints: their run directory), so a link never makes ssmbench read, or echo in an
                          error, a file from elsewhere
    under its size cap    LIMITS below, per kind of file: anything larger is not what ssmbench or a dataset release
                          holds, and is refused instead of read into memory

and parsing is bounded: a file's size bounds the work of the JSON and YAML parsers, and a YAML document may hold
at most MAX_YAML_NODES nodes once its aliases are expanded (`BoundedLoader`), so a "billion laughs" document of a
few hundred bytes is refused at once instead of hanging whatever walks it later (a report, a run key); a text
line is read only up to its kind's line cap. Every refusal is `FileRefused`, whose message is one line naming the
file; callers re-raise it as their own error class (RecordError, CheckpointError, DataError, RecipeError).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

import yaml

from ssmbench.errors import SSMBenchError
from ssmbench.paths import escape

MiB, GiB = 2**20, 2**30
# Size caps per kind of file, in bytes (each far above what ssmbench writes or a dataset release holds).
LIMITS = {
    "recipe": 1 * MiB,  # a recipe or sweep file, a run's recipe.yaml (a few kB)
    "record": 16 * MiB,  # env.json, results.json, a TDI artifact's .json, a prepared cache's splits.json
    "metrics": 256 * MiB,  # metrics.jsonl (a line is ~200 bytes: over a million lines)
    "checkpoint": 2 * GiB,  # last.pt, prev.pt, best.pt, init.pt, a TDI artifact, a Hankel cache
    "data": 8 * GiB,  # a raw dataset file: a ListOps/Retrieval TSV, a CIFAR batch, Pathfinder metadata, an IDX file
}
MAX_LINE_BYTES = 16 * MiB  # one line of a data text file (a ListOps expression of 100,000 tokens is ~400 kB)
MAX_YAML_NODES = 100_000  # nodes of a YAML document with every alias expanded (a recipe has a few hundred)


class FileRefused(SSMBenchError):
    """A file that breaks the reading rule; `problem` is the reason, the message `<path>: <problem>`."""

    def __init__(self, path: Path | str, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


def open_checked(path: Path | str, kind: str, roots: list[Path] | None = None) -> BinaryIO:
    """Open a file for binary reading under the rule above (FileNotFoundError if it does not exist)."""
    path = Path(path)
    if roots is not None and (problem := escape(path, roots)) is not None:
        raise FileRefused(path, problem.removeprefix(f"'{path}' ") + "; not read")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise FileRefused(path, f"cannot open ({e.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        what = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else \
            "a socket" if stat.S_ISSOCK(info.st_mode) else "a device"
        raise FileRefused(path, f"is {what}, not a regular file; replace it with the file it should be")
    limit = LIMITS[kind]
    if info.st_size > limit:
        os.close(fd)
        raise FileRefused(path, f"{info.st_size:,} bytes, over the {limit:,}-byte limit for a {kind} file; not read")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bytes(path: Path | str, kind: str, roots: list[Path] | None = None) -> bytes:
    """The bytes of a file read under the rule (see `open_checked`); a file that grows past the cap while being
    read is refused too."""
    limit = LIMITS[kind]
    with open_checked(path, kind, roots) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileRefused(path, f"grew over the {limit:,}-byte limit for a {kind} file while being read")
    return data


def lines(path: Path | str, kind: str = "data", roots: list[Path] | None = None) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw line) of a text file read under the rule, each line at most MAX_LINE_BYTES (a
    longer one, e.g. a sparse file of zeros with no line break, is refused without being held in memory)."""
    with open_checked(path, kind, roots) as f:
        i = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            i += 1
            if len(raw) > MAX_LINE_BYTES:
                raise FileRefused(path, f"line {i} is longer than {MAX_LINE_BYTES:,} bytes; not a text file of "
                                        f"this kind (truncated or corrupt)")
            yield i, raw


class YAMLTooLarge(yaml.YAMLError):
    """A YAML document over MAX_YAML_NODES nodes with its aliases expanded, or one that refers to itself."""


class BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a document over MAX_YAML_NODES nodes once aliases are expanded (anchors and
    aliases stay usable in ordinary recipes) and a recursive alias, before anything is constructed."""

    def compose_document(self):
        node = super().compose_document()
        expanded_nodes(node)
        return node


def expanded_nodes(node: yaml.Node) -> int:
    """Nodes of a composed YAML graph with every alias expanded: size(n) = 1 + sum of size(child), memoized on
    the node (aliases share nodes), so a bomb is measured in time linear in the composed graph."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        if id(n) in active:
            raise YAMLTooLarge("a YAML alias refers to the node that contains it (a recursive document)")
        active.add(id(n))
        children = [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else \
            n.value if isinstance(n, yaml.SequenceNode) else []
        total = 1 + sum(size(c) for c in children)
        active.discard(id(n))
        if total > MAX_YAML_NODES:
            raise YAMLTooLarge(f"the document expands to over {MAX_YAML_NODES:,} values through its aliases "
                               f"(anchors `&` repeated with `*`); write the values out instead")
        sizes[id(n)] = total
        return total

    return size(node)


def load_yaml(text: str):
    """`yaml.safe_load` under the node bound (`BoundedLoader`); raises what PyYAML raises (YAMLError, and
    RecursionError or ValueError for documents nested too deeply or integers too long), for the caller to name."""
    return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - BoundedLoader is a SafeLoader
