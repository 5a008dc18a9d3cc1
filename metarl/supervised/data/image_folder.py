"""Few-shot classes from a folder of images with split CSVs, the way MiniImageNet is distributed.

Layout::

    <root>/train.csv, val.csv, test.csv     header "filename,label", one image per line
    <root>/<label>/<filename>               one folder per class (or, as in the original
    <root>/images/<filename>                MiniImageNet archive, all images in images/)

The classes of a split are the labels of its CSV (Ravi & Larochelle's MiniImageNet: 64 / 16 /
20 classes of 600 images). Images are converted to RGB and resized to ``size × size`` with an
antialiased (Lanczos) filter, then cached as one uint8 tensor per split, keyed by the CSV's
digest and the size and modification time of every image, so edited data is re-read.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metarl.supervised.data.episodes import ClassImages
from metarl.supervised.data.files import DataError, cached, sha256_file

_VERSION = "image-folder-v1-lanczos-rgb"
_HINT = (
    "An image folder needs train.csv, val.csv and test.csv (header 'filename,label') and the "
    "images in <root>/<label>/<filename> or <root>/images/<filename>."
)


def read_split_csv(root: Path, subset: str) -> list[tuple[str, str]]:
    """``(filename, label)`` rows of ``root/<subset>.csv``.

    Raises:
        DataError: the folder or the CSV is missing, or the CSV lacks the two columns.
    """
    if not root.is_dir():
        raise DataError(f"image folder {root} not found (set data_dir to it). {_HINT}")
    path = root / f"{subset}.csv"
    if not path.is_file():
        raise DataError(f"{path} is missing. {_HINT}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"filename", "label"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected the columns filename,label. {_HINT}")
        rows = [(row["filename"], row["label"]) for row in reader]
    if not rows:
        raise DataError(f"{path} lists no images. {_HINT}")
    return rows


def _image_path(root: Path, filename: str, label: str) -> Path:
    for path in (root / label / filename, root / "images" / filename):
        if path.is_file():
            return path
    raise DataError(f"image {filename!r} of class {label!r} not found under {root}. {_HINT}")


def _load(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            small = image.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
    except OSError as e:
        raise DataError(f"{path} cannot be read as an image ({e}). {_HINT}") from None
    return np.asarray(small, dtype=np.uint8).transpose(2, 0, 1)  # (3, size, size)


def image_folder_split(data_dir: str | Path, subset: str, size: int = 84) -> ClassImages:
    """The classes of ``subset`` (``train``, ``val`` or ``test``) of an image folder.

    Classes are ordered by label name; their images in CSV order.

    Raises:
        DataError: see :func:`read_split_csv`; also a listed image that is missing or unreadable.
    """
    root = Path(data_dir).expanduser()
    rows = read_split_csv(root, subset)
    paths = [(_image_path(root, name, label), label) for name, label in rows]
    fingerprint = hashlib.sha256(
        f"{_VERSION}-{size}-{sha256_file(root / f'{subset}.csv')}".encode()
    )
    for path, _ in paths:
        stat = path.stat()
        fingerprint.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns};".encode())

    def build() -> dict:
        labels = sorted({label for _, label in paths})
        per_class: dict[str, list[np.ndarray]] = {label: [] for label in labels}
        for path, label in paths:
            per_class[label].append(_load(path, size))
        counts = [len(per_class[label]) for label in labels]
        store = np.zeros((len(labels), max(counts), 3, size, size), dtype=np.uint8)
        for i, label in enumerate(labels):
            store[i, : counts[i]] = np.stack(per_class[label])
        return {"images": torch.from_numpy(store), "counts": torch.tensor(counts), "labels": labels}

    data = cached(f"imagefolder-{subset}{size}", fingerprint.hexdigest()[:16], build)
    n_classes = len(data["labels"])
    return ClassImages(data["images"], torch.arange(n_classes), counts=data["counts"])
