"""The NVIDIA driver as `nvidia-smi` reports it, the torch build that driver runs, and why CUDA is unusable.

Importing this module needs only the standard library: `make install` runs it before torch is installed,

    python -m ssmbench.nvidia pip-args [--cuda 12.6|12.8|13.0|cpu]

printing the pip arguments that install the pinned torch, torchvision and torchaudio (constraints.txt) built for
this machine's driver, or nothing when the default wheels from PyPI (CUDA 13.0) are the right ones or there is no
NVIDIA GPU.

torch 2.11's builds (PyTorch's release matrix; the minimum Linux driver of each CUDA toolkit, CUDA 12.x builds
also run on older 12.x drivers down to 525.60.13 by CUDA's minor-version compatibility):

| build | CUDA | driver     | compute capabilities (SASS)                  |
|-------|------|------------|----------------------------------------------|
| cu130 | 13.0 | >= 580.65  | 7.5, 8.0, 8.6, 9.0, 10.0, 12.0 (+PTX)        |
| cu128 | 12.8 | >= 570.26  | 7.5, 8.0, 8.6, 9.0, 10.0, 12.0               |
| cu126 | 12.6 | >= 525.60  | 5.0, 6.0, 7.0, 7.5, 8.0, 8.6, 9.0            |

`build_for` picks the newest build the driver runs whose architectures include every GPU (cu126 for a V100 or
older); a driver below 525.60.13 runs none of them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

INDEX = "https://download.pytorch.org/whl/{build}"


@dataclass(frozen=True)
class Build:
    name: str
    cuda: str
    min_driver: str
    min_capability: float  # the oldest architecture the build has code for


BUILDS = (Build("cu130", "13.0", "580.65.06", 7.5), Build("cu128", "12.8", "570.26", 7.5),
          Build("cu126", "12.6", "525.60.13", 5.0))
DEFAULT_BUILD = "cu130"  # torch 2.11's wheel on PyPI
QUERY = "index,name,driver_version,compute_cap,memory.free,memory.total"


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    driver: str
    capability: float | None  # None where nvidia-smi is too old to report it
    free_mib: int | None
    total_mib: int | None


def version(text: str) -> tuple[int, ...]:
    """'550.54.15' -> (550, 54, 15)."""
    return tuple(int(part) for part in re.findall(r"\d+", text))


def _number(text: str, kind=float):
    try:
        return kind(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def query() -> tuple[list[GPU], str | None]:
    """(the GPUs nvidia-smi lists, None), or ([], why nvidia-smi gave none): not installed, or failing (a driver
    that is not loaded, a container without the GPU passed through)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return [], "nvidia-smi not found"
    try:
        proc = subprocess.run([exe, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], f"nvidia-smi could not run ({e})"
    if proc.returncode != 0:
        first = (proc.stdout + proc.stderr).strip().splitlines()
        return [], f"nvidia-smi failed: {first[0] if first else f'exit status {proc.returncode}'}"
    gpus = []
    for line in proc.stdout.strip().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 6:
            continue
        index, name, driver, cap, free, total = fields
        if _number(index, int) is not None and version(driver):
            gpus.append(GPU(int(index), name, driver, _number(cap), _number(free, int), _number(total, int)))
    return gpus, None if gpus else "nvidia-smi lists no GPU"


def build_for(driver: str, capabilities: list[float | None]) -> Build:
    """The newest torch build that `driver` runs and that has code for every capability (module docstring)."""
    known = [c for c in capabilities if c is not None]
    for build in BUILDS:
        if version(driver) >= version(build.min_driver) and all(c >= build.min_capability for c in known):
            return build
    raise ValueError(f"NVIDIA driver {driver} is older than every CUDA build of torch 2.11 runs on (>= 525.60.13); "
                     f"update the driver, or install the CPU build: make install CUDA=cpu")


def build_named(cuda: str) -> Build | None:
    """`make install CUDA=...`: 12.6, 12.8, 13.0 (or cu126 ...); None for cpu."""
    if cuda.lower() == "cpu":
        return None
    for build in BUILDS:
        if cuda in (build.cuda, build.name):
            return build
    known = ", ".join([b.cuda for b in BUILDS] + ["cpu"])
    raise ValueError(f"CUDA={cuda}: torch 2.11 is built for CUDA {known}; pick one of those")


TORCH_PACKAGES = ("torch", "torchvision", "torchaudio")  # built together: one CUDA build for all three


def torch_pins(constraints: Path) -> list[str]:
    """The `torch==X`, `torchvision==Y`, `torchaudio==Z` lines of constraints.txt."""
    pins = [line.strip() for line in constraints.read_text().splitlines() if line.split("==")[0] in TORCH_PACKAGES]
    if len(pins) != len(TORCH_PACKAGES):
        raise ValueError(f"{constraints}: expected pins of {', '.join(TORCH_PACKAGES)}")
    return pins


def pip_args(cuda: str | None, constraints: Path) -> list[str]:
    """The arguments of `pip install` for torch from the build for `cuda` (stated) or for the driver nvidia-smi
    reports; [] for the default install from PyPI (no NVIDIA GPU, or a driver that runs the default cu130)."""
    if cuda:
        build = build_named(cuda)
        return [*torch_pins(constraints), "--index-url", INDEX.format(build=build.name if build else "cpu")]
    gpus, _ = query()
    if not gpus:
        return []
    build = build_for(gpus[0].driver, [g.capability for g in gpus])
    return [] if build.name == DEFAULT_BUILD else [*torch_pins(constraints), "--index-url", INDEX.format(build=build.name)]


def min_driver(torch_cuda: str) -> str | None:
    """The oldest driver a torch built with CUDA `torch_cuda` (torch.version.cuda) runs on: its major version's
    floor under minor-version compatibility (12.x: 525.60.13, 13.x: 580.65.06)."""
    floors = [b.min_driver for b in BUILDS if version(b.cuda)[:1] == version(torch_cuda)[:1]]
    return min(floors, key=version) if floors else None


def cuda_problem() -> str | None:
    """Why torch cannot use the GPUs nvidia-smi lists, with the fix; None when nvidia-smi lists none (or CUDA works)."""
    import torch

    gpus, _ = query()
    if not gpus or torch.cuda.is_available():
        return None
    listed = f"nvidia-smi lists {len(gpus)} GPU{'s' if len(gpus) > 1 else ''} ({gpus[0].name}, driver {gpus[0].driver})"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if torch.version.cuda is None:
        return (f"{listed} but torch {torch.__version__} is a CPU build; install a CUDA build: make clean install "
                f"(picks the build for this driver; docs/gpu.md)")
    floor = min_driver(torch.version.cuda)
    if floor and version(gpus[0].driver) < version(floor):
        try:
            fix = f"make clean install (installs {build_for(gpus[0].driver, [g.capability for g in gpus]).name} for it)"
        except ValueError:
            fix = "update the driver"
        return (f"{listed}, older than torch {torch.__version__} (CUDA {torch.version.cuda}) needs "
                f"(>= {floor}); {fix}")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return f"{listed} but CUDA_VISIBLE_DEVICES={visible!r} hides them; unset it or name the GPUs"
    try:
        torch.cuda.init()
        return f"{listed} but torch.cuda.is_available() is False; run `ssmbench doctor`"
    except Exception as e:  # torch's own reason: no driver loaded, a driver/runtime mismatch, ...
        first = str(e).strip().splitlines()
        return f"{listed} but CUDA does not initialize: {first[0] if first else type(e).__name__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssmbench.nvidia", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    args_parser = sub.add_parser("pip-args", help="pip arguments that install torch for this driver (or --cuda)")
    args_parser.add_argument("--cuda", default="", help="12.6, 12.8, 13.0 or cpu; empty: detect with nvidia-smi")
    args_parser.add_argument("--constraints", default="constraints.txt", type=Path)
    args = parser.parse_args(argv)
    try:
        print(" ".join(pip_args(args.cuda.strip() or None, args.constraints)))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
