"""The CIFAR-10 loader on small files in the dataset's own format (pickled dictionaries of numpy
arrays in ``cifar-10-batches-py/``, packed as ``cifar-10-python.tar.gz``), written here: the
real data cannot be downloaded on these machines. The published MD5 sums are replaced by the
generated files' own, so the checks run exactly as on the real files."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.supervised.data import cifar
from metarl.supervised.data.files import DataError

PER_BATCH = 20  # images per batch file: 2 of each class


def _batch(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    labels = [i % 10 for i in range(PER_BATCH)]
    data = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
    data[:, 0] = labels  # the first red pixel names the label: order can be checked
    entry = {b"batch_label": b"batch", b"labels": labels, b"data": data,
             b"filenames": [b"x.png"] * PER_BATCH}  # fmt: skip
    return pickle.dumps(entry, protocol=2)


def _write(root: Path, packed: bool, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = root / "cifar10"
    folder.mkdir(parents=True)
    contents = {name: _batch(i) for i, name in enumerate(cifar.BATCHES)}
    monkeypatch.setattr(
        cifar, "PUBLISHED_MD5", {n: hashlib.md5(b).hexdigest() for n, b in contents.items()}
    )
    if packed:
        with tarfile.open(folder / cifar.ARCHIVE, "w:gz") as tar:
            for name, raw in contents.items():
                info = tarfile.TarInfo(f"{cifar.FOLDER}/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    else:
        (folder / cifar.FOLDER).mkdir()
        for name, raw in contents.items():
            (folder / cifar.FOLDER / name).write_bytes(raw)
    return folder


@pytest.mark.parametrize("packed", [True, False], ids=["archive", "unpacked"])
def test_loads_every_batch_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    packed: bool) -> None:  # fmt: skip
    _write(tmp_path, packed, monkeypatch)
    images, labels = cifar.load_cifar10(str(tmp_path))
    assert images.shape == (6 * PER_BATCH, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(labels, torch.arange(6 * PER_BATCH) % 10)
    assert torch.equal(images[:, 0, 0, 0].long(), labels)  # channel-first, row-major pixels


def test_class_disjoint_splits_and_episodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metarl.supervised.data.episodes import sample_episodes

    _write(tmp_path, True, monkeypatch)
    train = cifar.cifar10_split([0, 1, 2, 3, 4], "train", str(tmp_path))
    test = cifar.cifar10_split([0, 1, 2, 3, 4], "test", str(tmp_path))
    assert train.classes.tolist() == [0, 1, 2, 3, 4] and test.classes.tolist() == [5, 6, 7, 8, 9]
    batch = sample_episodes(test, 2, 5, 1, 3, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (2, 5, 3, 32, 32)
    # every image of an episode's class k shows a source label of the test split
    source = (batch.query_x[..., 0, 0, 0] * 255).round().long()
    assert set(source.flatten().tolist()) <= {5, 6, 7, 8, 9}


def test_a_damaged_batch_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write(tmp_path, False, monkeypatch)
    path = folder / cifar.FOLDER / "data_batch_3"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="data_batch_3 does not have the published MD5"):
        cifar.load_cifar10(str(tmp_path))


def test_a_pickle_that_builds_anything_else_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write(tmp_path, False, monkeypatch)
    hostile = pickle.dumps({b"data": Path("/"), b"labels": []}, protocol=2)  # builds a Path
    (folder / cifar.FOLDER / "test_batch").write_bytes(hostile)
    digests = dict(cifar.PUBLISHED_MD5, test_batch=hashlib.md5(hostile).hexdigest())
    monkeypatch.setattr(cifar, "PUBLISHED_MD5", digests)
    with pytest.raises(DataError, match="refused to build"):
        cifar.load_cifar10(str(tmp_path))


def test_missing_data_says_how_to_fetch(tmp_path: Path) -> None:
    (tmp_path / "cifar10").mkdir()
    with pytest.raises(DataError, match="metarl data fetch cifar10"):
        cifar.load_cifar10(str(tmp_path))


def test_the_experiment_trains_on_the_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metarl.cli import main

    _write(tmp_path / "data", True, monkeypatch)
    assert main(["train", "cifar10-5w1s", "--out", str(tmp_path / "run"), "--no-progress", "--set",
                 f"data_dir={tmp_path / 'data'}", "iterations=2", "log_every=1",
                 "checkpoint_every=2", "k_query=1", "inner_steps=1",
                 "tensorboard=false"]) == 0  # fmt: skip
