"""Omniglot (Lake et al. 2015) from its two standard archives, and its few-shot splits.

The PNGs are read straight from ``images_background.zip`` and ``images_evaluation.zip`` (no
extraction), converted to 28×28 with an antialiased (Lanczos) resize of the greyscale image, and
inverted so that strokes are 1 and the background 0 (as the MAML code feeds them). The result,
``(1623 characters, 20 drawers, 28, 28)`` uint8, is cached (see :mod:`.files`); a first run takes
about 10 s, later runs load it in well under a second.

Note: the original MAML script (``data/omniglot_resized/resize_images.py``) called
``Image.resize((28, 28), LANCZOS)`` on the 1-bit PNGs; Pillow silently uses nearest-neighbour
for mode ``"1"``, so its images were binary. We convert to greyscale first, so the resize is
really antialiased, as the paper describes ("downsampled to 28×28"). ``resize="nearest"``
(config ``omniglot_resize``) gives the original script's binary images instead.

Splits (:func:`omniglot_split`):

``"maml"`` (the MAML paper and its code, ``data_generator.py``)
    The 1623 character folders, sorted by ``Alphabet/characterNN``, shuffled with Python's
    ``random.Random(1)``; the first 1100 are meta-train, the next 100 meta-validation, the last
    423 meta-test. The original code shuffled ``os.listdir`` order, which is unspecified, so its
    exact character assignment cannot be recovered; the procedure and sizes are the same.
    Augmentation: in every episode, every sampled class is rotated by its own uniformly drawn
    multiple of 90° (all its support and query images alike), at meta-train and meta-test time,
    as ``make_data_tensor`` does with ``tf.image.rot90``. Classes = 1100 / 100 / 423 characters.
``"vinyals"`` (Vinyals et al. 2016, the lists of ``splits/vinyals``)
    Every line ``Alphabet/characterNN/rotDDD`` is one class: a character at a fixed rotation,
    so rotations are extra classes. Classes = 4112 train / 688 val / 1692 test (1028, 172, 423
    characters).
"""

from __future__ import annotations

import io
import zipfile
import zlib

import numpy as np
import torch
from PIL import Image

from metarl.supervised.data.episodes import ClassImages
from metarl.supervised.data.files import DataError, cached, dataset_dir, source_key, verify_files

ARCHIVES = ("images_background.zip", "images_evaluation.zip")
N_CHARACTERS, N_DRAWERS = 1623, 20
IMAGE_SIZE = 28
SPLIT_SIZES = {"train": 1100, "val": 100, "test": 423}
"""Characters per split of the MAML paper's split."""
SHUFFLE_SEED = 1
"""``random.seed(1)`` of the original code before shuffling the character folders."""
SPLITS = ("maml", "vinyals")
_VERSION = "omniglot-v1-{resize}28-inverted"
RESIZES = ("lanczos", "nearest")
"""How the 105×105 1-bit PNGs become ``size``×``size``: an antialiased Lanczos resize of the
greyscale image, or nearest neighbour on the 1-bit image (binary, as the MAML script's)."""
_HINT = (
    "Omniglot needs images_background.zip and images_evaluation.zip (the standard archives, "
    "about 14 MB) in <data root>/omniglot/; copy them there again from a good source."
)


def _decode(png: bytes, size: int, resize: str = "lanczos") -> np.ndarray:
    """One 105×105 1-bit PNG -> ``(size, size)`` uint8, strokes bright (``resize``: RESIZES)."""
    image = Image.open(io.BytesIO(png))
    if resize == "lanczos":
        small = image.convert("L").resize((size, size), Image.Resampling.LANCZOS)
    else:  # what the MAML script's LANCZOS gave on mode "1": nearest neighbour, 0 or 255
        small = image.convert("1").resize((size, size), Image.Resampling.NEAREST).convert("L")
    return 255 - np.asarray(small, dtype=np.uint8)


def _build(folder, size: int, resize: str) -> dict:
    """Decode every PNG of both archives into one ``(1623, 20, size, size)`` uint8 tensor."""
    characters: dict[str, list[bytes]] = {}
    for archive in ARCHIVES:
        try:
            with zipfile.ZipFile(folder / archive) as zf:
                for name in sorted(n for n in zf.namelist() if n.endswith(".png")):
                    # <set>/<Alphabet>/characterNN/<ID>_<DD>.png -> "Alphabet/characterNN"
                    parts = name.split("/")
                    characters.setdefault("/".join(parts[-3:-1]), []).append(zf.read(name))
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
            raise DataError(
                f"{folder / archive} cannot be read as a zip archive ({e}). {_HINT}"
            ) from None
    counts = {len(v) for v in characters.values()}
    if len(characters) != N_CHARACTERS or counts != {N_DRAWERS}:
        raise DataError(
            f"{folder}: expected {N_CHARACTERS} characters with {N_DRAWERS} images each, found "
            f"{len(characters)} characters with {sorted(counts)} images. {_HINT}"
        )
    names = sorted(characters)
    images = np.stack(
        [np.stack([_decode(png, size, resize) for png in characters[n]]) for n in names]
    )
    return {"images": torch.from_numpy(images), "characters": names}


def load_omniglot(
    data_dir: str | None = None, size: int = IMAGE_SIZE, resize: str = "lanczos"
) -> dict:
    """All of Omniglot, preprocessed (from the cache when it matches the archives).

    Args:
        data_dir: the data root (config ``data_dir``); see :func:`.files.resolve_data_dir`.
        size: side of the resized images.
        resize: ``"lanczos"`` (antialiased greyscale) or ``"nearest"`` (binary, the MAML
            script's images); see :data:`RESIZES`.

    Returns:
        ``{"images": (1623, 20, size, size) uint8, "characters": ["Alphabet/characterNN", ...]}``
        with characters sorted by name.

    Raises:
        DataError: the folder or an archive is missing, an archive fails its checksum or is not
            a readable zip, or the content is not the 1623 × 20 images of Omniglot.
        ValueError: a ``resize`` not in :data:`RESIZES`.
    """
    if resize not in RESIZES:
        raise ValueError(f"Omniglot resize must be one of {RESIZES}, got {resize!r}")
    folder = dataset_dir(data_dir, "omniglot")
    digests = verify_files(folder, list(ARCHIVES), _HINT)
    key = source_key(digests, f"{_VERSION.format(resize=resize)}-{size}")
    name = f"omniglot{size}" if resize == "lanczos" else f"omniglot{size}-{resize}"
    return cached(name, key, lambda: _build(folder, size, resize))


def _maml_split(characters: list[str], split: str) -> list[int]:
    import random

    order = list(range(len(characters)))
    random.Random(SHUFFLE_SEED).shuffle(order)
    n_train, n_val = SPLIT_SIZES["train"], SPLIT_SIZES["val"]
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val)}
    start, stop = bounds.get(split, (n_train + n_val, len(order)))
    return order[start:stop]


def _vinyals_split(data_dir: str | None, characters: list[str], split: str) -> list[str]:
    folder = dataset_dir(data_dir, "omniglot")
    name = f"splits/vinyals/{split}.txt"
    verify_files(folder, [name], "The Vinyals split lists come with the Omniglot data folder.")
    return [line.strip() for line in (folder / name).read_text().splitlines() if line.strip()]


def omniglot_split(data: dict, split: str, subset: str, data_dir: str | None = None) -> ClassImages:
    """The classes of one subset of an Omniglot split (see the module docstring).

    Args:
        data: the output of :func:`load_omniglot`.
        split: ``"maml"`` or ``"vinyals"``.
        subset: ``"train"``, ``"val"`` or ``"test"``.
        data_dir: the data root (the Vinyals lists are read from its ``omniglot/splits``).
    """
    if split not in SPLITS:
        raise ValueError(f"Omniglot split must be one of {SPLITS}, got {split!r}")
    if subset not in ("train", "val", "test"):
        raise ValueError(f"subset must be train, val or test, got {subset!r}")
    characters: list[str] = data["characters"]
    images = data["images"].unsqueeze(2)  # (1623, 20, 1, H, W): one channel
    if split == "maml":
        index = torch.tensor(_maml_split(characters, subset))
        return ClassImages(images, index, random_rotation=True)
    position = {name: i for i, name in enumerate(characters)}
    index, rotations = [], []
    for line in _vinyals_split(data_dir, characters, subset):
        character, _, rot = line.rpartition("/")
        if character not in position or rot not in ("rot000", "rot090", "rot180", "rot270"):
            raise DataError(f"Vinyals split line {line!r} names no Omniglot character/rotation")
        index.append(position[character])
        rotations.append(int(rot[3:]) // 90)
    return ClassImages(images, torch.tensor(index), rotations=torch.tensor(rotations))
