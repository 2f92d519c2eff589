"""Images as pixel sequences: LRA `image` (grayscale CIFAR-10) and `scifar` (sequential CIFAR-10, RGB or gray).

Source: the CIFAR-10 python pickle batches `cifar-10-batches-py/data_batch_1..5`, `test_batch`; each is a dict
with `b'data'` uint8 (10000, 3072), channel-major (1024 R, 1024 G, 1024 B, rows in raster order) and `b'labels'`.
The batches are unpickled by `BatchUnpickler`, which admits only numpy's array reconstruction, so a tampered file
cannot run code.
Gray = round(0.2989 R + 0.5870 G + 0.1140 B) (tf.image.rgb_to_grayscale weights), integers 0-255 (docs/methods.md §G).
A sequence is the 1024 pixels in raster order, each pixel standardized with the training split's per-channel
mean and std; validation is `data.val_fraction` of train (LRA: 10%) chosen with `data.split_seed`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Subset

from ssmbench.contracts import ModelIO
from ssmbench.data.base import Adapter, DataBundle, split_indices
from ssmbench.data.cache import cache_key, prepared_splits
from ssmbench.data.layout import data_origin, missing_data, resolve_source
from ssmbench.data.textfile import data_file
from ssmbench.errors import DataError
from ssmbench.registry import DATASETS

BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140])
PUBLIC = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract to data/cifar-10-batches-py)"


# Every global a CIFAR-10 batch may reference: numpy's array reconstruction (the official Python 2 files, and
# numpy 1/2 pickles of protocols 2-5) and `_codecs.encode` (bytes in protocol-2 pickles written by Python 3).
# Nothing else can be called while unpickling, so a batch file cannot run code.
ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ALLOWED_GLOBALS; any other global raises pickle.UnpicklingError."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"the file references {module}.{name}, which a CIFAR-10 batch never holds "
                                         f"(refused: unpickling it could run code)")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (S, 32, 32, 3) uint8 HWC, labels (S,)) from one CIFAR-10 pickle batch, read with BatchUnpickler.

    The batch must be a dict with `b'data'` a uint8 (S, 3072) array and `b'labels'` S integers 0-9."""
    f = data_file(path)
    try:
        with f:
            d = BatchUnpickler(f, encoding="bytes").load()
        data, labels = d[b"data"], np.asarray(d[b"labels"])
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
            raise ValueError("b'data' is not a uint8 (S, 3072) array")
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or (labels.size and not 0 <= labels.min() <= labels.max() <= 9):
            raise ValueError("b'labels' is not a list of integers 0-9")
        labels = labels.astype(np.int64)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except Exception as e:
        raise DataError(f"{path}: not a readable CIFAR-10 python batch ({type(e).__name__}: {e}); "
                        f"extract cifar-10-python.tar.gz again.") from None
    if len(images) != len(labels):
        raise DataError(f"{path}: {len(images)} images but {len(labels)} labels; the batch is corrupt.")
    return images, labels


def to_gray(images: np.ndarray) -> np.ndarray:
    """(S, H, W, 3) uint8 -> (S, H, W, 1) uint8 with the ITU-R 601 luma weights, rounded."""
    return np.rint(images.astype(np.float64) @ GRAY_WEIGHTS).clip(0, 255).astype(np.uint8)[..., None]


class Standardize:
    """uint8 row (L, C) -> float32 tensor (L, C) of (x/255 - mean_c) / std_c."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)

    def __call__(self, row: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((row.astype(np.float32) / 255.0 - self.mean) / self.std)


def channel_stats(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of x/255 over (S, L, C) uint8, in float64, chunked to bound memory."""
    s1 = np.zeros(pixels.shape[-1])
    s2 = np.zeros(pixels.shape[-1])
    for i in range(0, len(pixels), 4096):
        chunk = pixels[i:i + 4096].astype(np.float64) / 255.0
        s1 += chunk.sum(axis=(0, 1))
        s2 += (chunk ** 2).sum(axis=(0, 1))
    n = pixels.shape[0] * pixels.shape[1]
    mean = s1 / n
    return mean, np.sqrt(np.maximum(s2 / n - mean ** 2, 1e-12))


class CIFAROptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field("cifar-10-batches-py", description="folder under data.root with the CIFAR-10 python batches")
    color: Literal["gray", "rgb"] = Field("rgb", description="rgb: 3 input channels; gray: luma, 1 channel")


class GrayOptions(CIFAROptions):
    color: Literal["gray"] = Field("gray", description="LRA Image is grayscale (fixed)")


def cifar_bundle(cfg, options: CIFAROptions, task: str) -> DataBundle:
    folder = resolve_source(cfg.root, options.source, task)
    files = [folder / b for split in BATCHES.values() for b in split]
    if not all(f.is_file() for f in files):
        raise missing_data(task, files, PUBLIC)

    def prepare():
        out = {}
        for split, names in BATCHES.items():
            parts = [read_batch(folder / n) for n in names]
            images = np.concatenate([p[0] for p in parts])
            images = to_gray(images) if options.color == "gray" else images
            out[split] = (images.reshape(len(images), 1024, -1), np.concatenate([p[1] for p in parts]))
        return out

    key = cache_key(files, Path(cfg.root), {"color": options.color})
    splits, cache = prepared_splits(Path(cfg.root), task, key, prepare, lambda r: r)
    train, test = splits["train"], splits["test"]
    mean, std = channel_stats(np.concatenate(train.chunks))
    train.transform = test.transform = Standardize(mean, std)
    keep, held = split_indices(len(train), cfg.val_fraction, cfg.split_seed)
    source, provenance = data_origin(folder, f"CIFAR-10 python batches ({options.color})")
    channels = 1 if options.color == "gray" else 3
    return DataBundle(train=Subset(train, keep.tolist()), val=Subset(train, held.tolist()), test=test,
                      io=ModelIO(d_input=channels, input_kind="real", n_outputs=10), seq_len=1024,
                      task="classification", source=source, provenance=provenance,
                      facts={"cache": str(cache), "pixel_mean": mean.tolist(), "pixel_std": std.tolist()})


@DATASETS.register("image")
class Image(Adapter):
    Options = GrayOptions
    description = "LRA Image: grayscale CIFAR-10 pixel by pixel, L = 1024, 1 channel, 10 classes"

    def build(self, cfg, options: GrayOptions) -> DataBundle:
        return cifar_bundle(cfg, options, "image")


@DATASETS.register("scifar")
class SequentialCIFAR(Adapter):
    Options = CIFAROptions
    description = "sequential CIFAR-10 pixel by pixel, L = 1024, RGB (3 channels) or gray"

    def build(self, cfg, options: CIFAROptions) -> DataBundle:
        return cifar_bundle(cfg, options, "scifar")
