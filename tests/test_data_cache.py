"""The prepared-split cache: reuse, invalidation on source change, nothing half-written after a failure."""

import numpy as np
import pytest

from ssmbench.data.cache import cache_key, prepared_splits


def test_reuse_invalidate_and_atomicity(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("a")
    calls = []

    def build():
        calls.append(1)
        return {"train": (np.arange(12, dtype=np.uint8).reshape(3, 4), np.array([0, 1, 0]))}

    key = cache_key([src], tmp_path, {"max_length": 4})
    splits, folder = prepared_splits(tmp_path, "t", key, build, lambda r: r.copy())
    again, _ = prepared_splits(tmp_path, "t", key, build, lambda r: r.copy())
    assert len(calls) == 1 and again["train"][2][0].tolist() == [8, 9, 10, 11] and int(again["train"][1][1]) == 1
    assert folder.parent == tmp_path / "t" / "prepared"
    assert cache_key([src], tmp_path, {"max_length": 5}) != key
    src.write_text("ab")
    assert cache_key([src], tmp_path, {"max_length": 4}) != key

    def broken():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        prepared_splits(tmp_path, "t", "other", broken, lambda r: r)
    assert sorted(p.name for p in (tmp_path / "t" / "prepared").iterdir()) == [key]
