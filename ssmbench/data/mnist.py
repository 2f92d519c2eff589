"""Sequential MNIST (`smnist`): 784 pixels in raster order, one channel, 10 classes; pMNIST with `permute: true`.

Sources, in order: the MNIST IDX files in torchvision's layout under `<root>/MNIST/raw/` (downloaded there by
torchvision when `data.download: true` and online), else the embedded real subset `data/embedded/mnist-subset.npz`
(10,000 train / 2,000 test digits, 1,000 / 200 per class, checksum-verified; MNIST is CC BY-SA 3.0, LeCun,
Cortes, Burges). Validation is carved from train with `data.split_seed`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import TensorDataset

from ssmbench.contracts import ModelIO
from ssmbench.data.base import Adapter, DataBundle, require_file, sha256_file, split_indices
from ssmbench.data.textfile import data_file
from ssmbench.errors import DataError
from ssmbench.registry import DATASETS

EMBEDDED = Path(__file__).resolve().parents[2] / "data" / "embedded" / "mnist-subset.npz"
EMBEDDED_SHA256 = "6779a21cbb93adea9400aaa84496cf52bd83ee71221c2c0d6fb8f62efc55ffc4"
MEAN, STD = 0.1307, 0.3081
IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


class MNISTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    permute: bool = Field(description="pMNIST: apply a fixed random permutation to the pixel order (required: no hidden default)")
    permutation_seed: int = Field(0, ge=0, lt=2**32, description="seed of the pixel permutation when permute is true")
    source: Literal["auto", "idx", "embedded"] = Field("auto", description="auto: IDX files if present, else the embedded subset")


def check_idx(path: Path) -> None:
    """A DataError naming `path` unless it is a complete uint8 IDX file: bytes 0 0 0x08 ndim, then ndim
    big-endian uint32 sizes, then exactly prod(sizes) bytes of data."""
    with data_file(path) as f:
        head = f.read(4)
        ndim = head[3] if len(head) == 4 and head[:3] == b"\x00\x00\x08" else 0
        sizes = f.read(4 * ndim)
    if not ndim or len(sizes) < 4 * ndim:
        raise DataError(f"smnist: {path} is not a uint8 IDX file (bad header); delete it and download it again.")
    shape = [int.from_bytes(sizes[i:i + 4], "big") for i in range(0, 4 * ndim, 4)]
    expected, actual = 4 + 4 * ndim + math.prod(shape), path.stat().st_size
    if actual != expected:
        raise DataError(f"smnist: {path} is truncated or corrupt ({actual} bytes; its header {shape} implies "
                        f"{expected}); delete it and download it again.")


def load_idx(root: Path, download: bool) -> tuple[np.ndarray, ...]:
    raw = root / "MNIST" / "raw"
    for name in IDX_FILES:
        if (raw / name).is_file():
            check_idx(raw / name)
    import torchvision

    try:
        train = torchvision.datasets.MNIST(str(root), train=True, download=download)
        test = torchvision.datasets.MNIST(str(root), train=False, download=download)
    except RuntimeError as e:
        raise DataError(f"smnist: cannot read the MNIST IDX files in {raw} ({e}). Put {', '.join(IDX_FILES)} "
                        f"(optionally .gz) there, set `data.download: true` on a machine with internet, or use "
                        f"`data.source: embedded`.") from None
    except Exception as e:  # corrupt or truncated files
        raise DataError(f"smnist: the MNIST IDX files in {raw} are unreadable ({type(e).__name__}: {e}); "
                        f"delete them and download again.") from None
    return train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy()


def load_embedded() -> tuple[np.ndarray, ...]:
    require_file(EMBEDDED, "smnist embedded subset", "It ships with the ssmbench repository; restore it with git.")
    digest = sha256_file(EMBEDDED)
    if digest != EMBEDDED_SHA256:
        raise DataError(f"smnist: {EMBEDDED} fails its checksum (sha256 {digest[:12]}..., expected "
                        f"{EMBEDDED_SHA256[:12]}...); restore it with `git checkout -- {EMBEDDED.name}`.")
    d = np.load(EMBEDDED)
    return d["x_train"], d["y_train"], d["x_test"], d["y_test"]


def idx_present(root: Path) -> bool:
    raw = root / "MNIST" / "raw"
    return all((raw / f).is_file() or (raw / f"{f}.gz").is_file() for f in IDX_FILES)


def to_sequences(images: np.ndarray, perm: torch.Tensor | None) -> torch.Tensor:
    """uint8 (S, 28, 28) -> standardized float (S, 784, 1) in raster (or permuted) order."""
    x = (torch.from_numpy(np.asarray(images, dtype=np.float32)).reshape(len(images), -1) / 255.0 - MEAN) / STD
    if perm is not None:
        x = x[:, perm]
    return x.unsqueeze(-1).contiguous()


@DATASETS.register("smnist")
class SequentialMNIST(Adapter):
    Options = MNISTOptions
    description = "sequential MNIST (pixel by pixel, L = 784); pMNIST with permute: true"

    def build(self, cfg, options: MNISTOptions) -> DataBundle:
        root = Path(cfg.root)
        use_idx = options.source == "idx" or (options.source == "auto" and (idx_present(root) or cfg.download))
        if use_idx:
            xtr, ytr, xte, yte = load_idx(root, cfg.download)
            source, provenance = "official", f"MNIST IDX files in {root / 'MNIST' / 'raw'}"
        else:
            xtr, ytr, xte, yte = load_embedded()
            source, provenance = "embedded-subset", "embedded real MNIST subset (10k train / 2k test), CC BY-SA 3.0"
        perm = torch.randperm(784, generator=torch.Generator().manual_seed(options.permutation_seed)) if options.permute else None
        x_train, y_train = to_sequences(xtr, perm), torch.as_tensor(np.asarray(ytr), dtype=torch.long)
        keep, held = split_indices(len(x_train), cfg.val_fraction, cfg.split_seed)
        return DataBundle(
            train=TensorDataset(x_train[keep], y_train[keep]),
            val=TensorDataset(x_train[held], y_train[held]),
            test=TensorDataset(to_sequences(xte, perm), torch.as_tensor(np.asarray(yte), dtype=torch.long)),
            io=ModelIO(d_input=1, input_kind="real", n_outputs=10),
            seq_len=784, task="classification", source=source,
            provenance=provenance + (f"; permuted (seed {options.permutation_seed})" if options.permute else ""),
        )
