"""MNIST and Fashion-MNIST few-shot tasks from the original IDX files, with class-disjoint splits.

Both datasets have 10 classes, so a 5-way split can only be 5 labels for meta-training and the
other 5 for meta-testing; which 5 is the config's ``train_classes`` (default ``[0, 1, 2, 3, 4]``:
meta-train on digits 0-4 / T-shirt, Trouser, Pullover, Dress, Coat; meta-test on digits 5-9 /
Sandal, Shirt, Sneaker, Bag, Ankle boot). There is no validation split. All 70,000 images (the
60,000 training and the 10,000 test images of the files) are used, grouped by label: the
files' own train/test division is about examples, not classes, so it plays no role here.

The four ``*.gz`` files are verified against the folder's ``SHA256SUMS`` if it has one, and
always against the published MD5 sums of their *decompressed* content (re-compressed copies,
such as the ones here and in the Debian package, pass). Parsing 70,000 images takes about a
second, so nothing is cached.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import torch

from metarl.supervised.data.episodes import ClassImages
from metarl.supervised.data.files import DataError, dataset_dir, verify_files

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
PUBLISHED_MD5 = {
    "mnist": (
        "6bbc9ace898e44ae57da46a324031adb",
        "a25bea736e30d166cdddb491f175f624",
        "2646ac647ad5339dbf082846283269ea",
        "27ae3e4e09519cfbb04c329615203637",
    ),
    "fashion-mnist": (
        "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "9018921c3c673c538a1fc5bad174d6f9",
        "8181f5470baa50b63fa0f6fddb340f0a",
        "15d484375f8d13e6eb1aabb0c3f46965",
    ),
}
"""MD5 of the decompressed IDX files, in the order of ``FILES``."""
FALLBACK_DIRS = {"fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),)}
HINTS = {
    "mnist": "MNIST needs the four original IDX .gz files in <data root>/mnist/.",
    "fashion-mnist": (
        "Fashion-MNIST needs the four IDX .gz files in <data root>/fashion-mnist/ or "
        "/usr/share/datasets/fashion-mnist/ (apt-get install dataset-fashion-mnist)."
    ),
}


def _parse_idx(raw: bytes, path: Path, hint: str) -> np.ndarray:
    """An IDX file (big-endian header: magic 0x0000 08 <ndim>, then the dims) as uint8."""
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"{path} is not an IDX file of unsigned bytes. {hint}")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) != offset + int(np.prod(dims)):
        raise DataError(f"{path}: {len(raw) - offset} data bytes for dims {dims}. {hint}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def load_idx_dataset(name: str, data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All images and labels of MNIST or Fashion-MNIST, verified.

    Returns:
        ``images (70000, 28, 28)`` uint8 and ``labels (70000,)`` long (the training file's
        images first).

    Raises:
        DataError: missing folder or file, checksum mismatch, or a malformed file.
    """
    if name not in PUBLISHED_MD5:
        raise ValueError(f"unknown IDX dataset {name!r}; expected one of {list(PUBLISHED_MD5)}")
    hint = HINTS[name]
    folder = dataset_dir(data_dir, name, FALLBACK_DIRS.get(name, ()))
    verify_files(folder, list(FILES), hint)
    arrays = []
    for file, md5 in zip(FILES, PUBLISHED_MD5[name]):
        try:
            raw = gzip.decompress((folder / file).read_bytes())
        except (OSError, EOFError) as e:
            raise DataError(f"{folder / file} cannot be decompressed ({e}). {hint}") from None
        if hashlib.md5(raw).hexdigest() != md5:
            raise DataError(
                f"{folder / file}: the decompressed content does not have the published MD5 "
                f"{md5} (a different or damaged file). {hint}"
            )
        arrays.append(_parse_idx(raw, folder / file, hint))
    images = torch.from_numpy(np.concatenate([arrays[0], arrays[2]]))
    labels = torch.from_numpy(np.concatenate([arrays[1], arrays[3]]).astype(np.int64))
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels. {hint}")
    return images, labels


def group_by_class(images: torch.Tensor, labels: torch.Tensor, n_classes: int) -> ClassImages:
    """``(M, H, W)`` or ``(M, C, H, W)`` images with labels 0..n_classes-1 -> a
    :class:`ClassImages` of all classes.

    Classes are zero-padded to the largest one; ``counts`` records the real sizes.
    """
    if images.dim() == 3:
        images = images.unsqueeze(1)  # one channel
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=n_classes)
    store = torch.zeros(n_classes, int(counts.max()), *images.shape[1:], dtype=torch.uint8)
    starts = torch.cumsum(counts, 0) - counts
    sorted_labels = labels[order]
    slot = torch.arange(len(labels)) - starts[sorted_labels]  # position within its class
    store[sorted_labels, slot] = images[order]
    return ClassImages(store, torch.arange(n_classes), counts=counts)


def mnist_split(
    name: str, train_classes: list[int], subset: str, data_dir: str | None = None
) -> ClassImages:
    """Meta-train (``subset="train"``: the labels ``train_classes``) or meta-test classes
    (``"test"``: all other labels) of MNIST or Fashion-MNIST."""
    if subset not in ("train", "test"):
        raise ValueError(f"(Fashion-)MNIST has train and test classes only, not {subset!r}")
    return class_disjoint(*load_idx_dataset(name, data_dir), train_classes, subset)


def class_disjoint(
    images: torch.Tensor, labels: torch.Tensor, train_classes: list[int], subset: str
) -> ClassImages:
    """A ten-class dataset's meta-train classes (``subset="train"``: ``train_classes``) or
    meta-test classes (``"test"``: the others), all images of each."""
    every = group_by_class(images, labels, 10)
    chosen = sorted(set(train_classes))
    if subset == "test":
        chosen = [c for c in range(10) if c not in chosen]
    every.classes = torch.tensor(chosen)
    return every
