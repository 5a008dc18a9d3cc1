"""CIFAR-10 few-shot tasks from the dataset's python version, with class-disjoint splits.

CIFAR-10 (Krizhevsky 2009) has 10 classes of 6,000 32×32 colour images. As for (Fashion-)MNIST,
a 5-way split is the config's ``train_classes`` for meta-training (default airplane,
automobile, bird, cat, deer) and the other five for meta-testing (dog, frog, horse, ship,
truck); all 60,000 images are used, grouped by label.

The python version is a folder ``cifar-10-batches-py/`` of pickled batches, read here from the
archive ``cifar-10-python.tar.gz`` as ``metarl data fetch cifar10`` stores it, or from the
unpacked folder. Every batch is checked against its published MD5 before it is read, and read
with an unpickler that builds nothing but dictionaries, lists, strings and numpy arrays (a
pickle can otherwise run any code).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.supervised.data.episodes import ClassImages
from metarl.supervised.data.files import DataError, dataset_dir
from metarl.supervised.data.mnist import class_disjoint

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
           "test_batch")  # fmt: skip
PUBLISHED_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
"""MD5 of each batch file of the canonical archive (as the dataset's page and torchvision give)."""
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")  # fmt: skip
HINT = (
    "CIFAR-10 needs cifar-10-python.tar.gz (or its unpacked cifar-10-batches-py/) in "
    "<data root>/cifar10/: metarl data fetch cifar10"
)

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
}


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that refuses every class but what a pickled numpy array needs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused to build {module}.{name}")
        if module == "numpy.core.multiarray":  # numpy >= 2 moved it
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _read_batches(folder: Path) -> dict[str, bytes]:
    """The six batch files' bytes, from the archive or the unpacked folder."""
    archive = folder / ARCHIVE
    if archive.is_file():
        try:
            with tarfile.open(archive, "r:gz") as tar:
                found = {}
                for name in BATCHES:
                    member = tar.extractfile(f"{FOLDER}/{name}")
                    if member is None:
                        raise KeyError(name)
                    found[name] = member.read()
                return found
        except (KeyError, tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{archive} is not a complete CIFAR-10 archive ({e}). {HINT}") from None
    unpacked = folder / FOLDER
    missing = [name for name in BATCHES if not (unpacked / name).is_file()]
    if missing:
        raise DataError(f"{folder} holds neither {ARCHIVE} nor {FOLDER}/{missing[0]}. {HINT}")
    return {name: (unpacked / name).read_bytes() for name in BATCHES}


def _parse(name: str, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One verified batch as ``(images (n, 3, 32, 32) uint8, labels (n,) int64)``."""
    if hashlib.md5(raw).hexdigest() != PUBLISHED_MD5[name]:
        raise DataError(f"CIFAR-10 {name} does not have the published MD5 (a different or "
                        f"damaged file). {HINT}")  # fmt: skip
    try:
        batch = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
    except (pickle.UnpicklingError, KeyError, TypeError, EOFError) as e:
        raise DataError(f"CIFAR-10 {name} is not a CIFAR-10 batch ({e}). {HINT}") from None
    images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(labels, dtype=np.int64)


def load_cifar10(data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All 60,000 images and labels, verified.

    Returns:
        ``images (60000, 3, 32, 32)`` uint8 (the five training batches first) and ``labels
        (60000,)`` long.

    Raises:
        DataError: missing, damaged or unexpected files (one line, with what to do).
    """
    folder = dataset_dir(data_dir, "cifar10")
    parsed = [_parse(name, raw) for name, raw in _read_batches(folder).items()]
    images = torch.from_numpy(np.concatenate([p[0] for p in parsed]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parsed]))
    if len(images) != len(labels) or int(labels.min()) < 0 or int(labels.max()) > 9:
        raise DataError(f"{folder}: labels outside 0-9 or not one per image. {HINT}")
    return images, labels


def cifar10_split(
    train_classes: list[int], subset: str, data_dir: str | None = None
) -> ClassImages:
    """Meta-train (``subset="train"``: the labels ``train_classes``) or meta-test classes
    (``"test"``: the other labels) of CIFAR-10."""
    if subset not in ("train", "test"):
        raise ValueError(f"CIFAR-10 has train and test classes only, not {subset!r}")
    return class_disjoint(*load_cifar10(data_dir), train_classes, subset)
