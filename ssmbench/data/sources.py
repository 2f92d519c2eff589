"""The official public sources of the datasets, in one place: what `ssmbench data download NAME` (and
`data.download: true` in a recipe) fetches, how it is verified and which part of the archive it extracts.

An `Archive` is one file at one URL with its published size and checksum (and where they are published). A
`Download` names the archive, the folders inside it that one adapter needs (only those are extracted), the folder
under the data root they become (the adapter's default `source`), about how much space the extracted folder takes
on disk, and the stated limit beyond which an archive member or the extraction as a whole is refused.

The LRA release has no published size or checksum: its size comes from the server, and its SHA-256 is computed
and recorded like every other archive's. Its extracted sizes are estimates (upper bounds of the image counts times
a typical file size, rounded up); the limits are set well above them.
"""

from __future__ import annotations

from dataclasses import dataclass

MB, GB = 10 ** 6, 10 ** 9


@dataclass(frozen=True)
class Archive:
    url: str
    filename: str
    size: int | None  # bytes as published, None when unpublished (the server's Content-Length is used)
    approx: int  # bytes, for `data list` and the disk-space check when `size` is None
    checksum: tuple[str, str] | None  # (hashlib algorithm, hex digest) as published, None when unpublished
    published: str  # where the checksum (and size) are published


@dataclass(frozen=True)
class Download:
    archive: Archive
    members: tuple[str, ...]  # archive folders to extract ("" = the whole archive); their contents become `folder`
    folder: str  # under the data root: the adapter's default `source` (pathfinder: `source`/pathfinder<R>)
    extracted: int  # bytes on disk the extracted folder takes, about (said before starting, checked against free space)
    limit: int  # bytes: a member or the whole extraction beyond this is refused
    fixed: tuple[tuple[str, object], ...] = ()  # adapter options the folders hold (`data.download` checks them)


LRA = Archive("https://storage.googleapis.com/long-range-arena/lra_release.gz", "lra_release.gz", None, 7_700 * MB,
              None, "no checksum is published for the LRA release (github.com/google-research/long-range-arena)")
CIFAR10 = Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz", 170_498_071,
                  170_498_071, ("md5", "c58f30108f718f92721af3b95e74349a"),
                  "torchvision.datasets.CIFAR10.tgz_md5")
SPEECH = Archive("http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz", "speech_commands_v0.02.tar.gz",
                 2_428_923_189, 2_428_923_189,
                 ("sha256", "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"),
                 "torchaudio.datasets.speechcommands._CHECKSUMS; size: tensorflow_datasets url_checksums")
IMDB = Archive("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz", "aclImdb_v1.tar.gz", 84_125_825,
               84_125_825, ("sha256", "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"),
               "tensorflow_datasets url_checksums/imdb_reviews.txt")


def lra(folder: str) -> tuple[str, ...]:
    """The release nests its folders in `lra_release/lra_release/`; a flatter copy (`lra_release/`) is accepted."""
    return (f"lra_release/lra_release/{folder}", f"lra_release/{folder}")


_CIFAR = Download(CIFAR10, ("cifar-10-batches-py",), "{source}", 190 * MB, 1 * GB)
DOWNLOADS: dict[str, Download] = {
    "listops": Download(LRA, lra("listops-1000"), "{source}", 800 * MB, 8 * GB),
    "retrieval": Download(LRA, lra("tsv_data"), "{source}", 5 * GB, 40 * GB),
    "pathfinder": Download(LRA, lra("pathfinder32"), "{source}/pathfinder32", 3 * GB, 30 * GB, (("resolution", 32),)),
    "pathx": Download(LRA, lra("pathfinder128"), "{source}/pathfinder128", 8 * GB, 60 * GB, (("resolution", 128),)),
    "image": _CIFAR,
    "scifar": _CIFAR,
    "speech": Download(SPEECH, ("",), "{source}", 3_500 * MB, 20 * GB),
    "text": Download(IMDB, ("aclImdb",), "{source}", 500 * MB, 4 * GB),
}

