"""Finding, verifying and caching dataset files (the loaders never download; ``metarl data
fetch`` does, on request).

* **Where the data lives**: the ``data_dir`` config key (``--set data_dir=...``), else the
  ``METARL_DATA`` environment variable, else ``../shared/data`` next to the repository.
* **Checksums**: a folder may hold a ``SHA256SUMS`` file (``sha256sum`` format); every file a
  loader reads is checked against it, so a truncated or altered archive stops the run with a
  message that says which file and what to do.
* **Cache**: preprocessing (e.g. decoding 32,460 Omniglot PNGs) happens once; the result is a
  tensor file whose name contains a digest of the source files, so a changed source builds a new
  cache instead of silently reusing the old one. Writes are atomic (temp file, then rename).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metarl.run import atomic_torch_save

DATA_ENV = "METARL_DATA"
CACHE_ENV = "METARL_CACHE"
CHECKSUMS = "SHA256SUMS"
REPO_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
"""``../shared/data`` relative to the repository (the project machines' offline data)."""


class DataError(FileNotFoundError):
    """A dataset is missing, incomplete or corrupt; the message says what to do.

    A ``FileNotFoundError`` so that the CLI reports it as one line, like a missing config file.
    """


def resolve_data_dir(data_dir: str | None) -> tuple[Path, str]:
    """The data root and where it came from (for error messages).

    Order: the ``data_dir`` argument (config key), ``$METARL_DATA``, ``../shared/data``.
    """
    if data_dir:
        return Path(data_dir).expanduser(), "the config key data_dir"
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}"
    return REPO_DATA, "the default ../shared/data next to the repository"


def dataset_dir(data_dir: str | None, name: str, fallbacks: tuple[Path, ...] = ()) -> Path:
    """``<data root>/<name>``, or the first existing ``fallbacks`` entry.

    Raises:
        DataError: none exists; the message lists the places looked at and how to point
            metarl at the data.
    """
    root, source = resolve_data_dir(data_dir)
    candidates = [root / name, *fallbacks]
    for path in candidates:
        if path.is_dir():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise DataError(
        f"dataset {name!r} not found (looked in: {looked}; data root from {source}). "
        f"Get it with `metarl data fetch {name} --to {root}`, or put the files in "
        f"<data root>/{name}/ and pass --set data_dir=<data root> or set {DATA_ENV}=<data root>."
    )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(folder: Path) -> dict[str, str] | None:
    """``{relative path: sha256}`` from ``folder/SHA256SUMS``, or None if there is none."""
    path = folder / CHECKSUMS
    if not path.is_file():
        return None
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest.lower()
    return sums


def verify_files(folder: Path, names: list[str], hint: str) -> dict[str, str]:
    """Check that ``names`` exist in ``folder`` and match its ``SHA256SUMS`` (if present).

    Args:
        folder: the dataset folder.
        names: files to check, relative to ``folder``.
        hint: what to do about a missing or corrupt file (appended to the message).

    Returns:
        ``{name: sha256}`` of the files as they are (the cache key of what is built from them).

    Raises:
        DataError: a file is missing, or its digest differs from ``SHA256SUMS``.
    """
    expected = read_checksums(folder)
    digests = {}
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path} is missing. {hint}")
        digests[name] = sha256_file(path)
        if expected is not None and name in expected and expected[name] != digests[name]:
            raise DataError(
                f"{path} is corrupt: its SHA-256 is {digests[name][:16]}…, {CHECKSUMS} "
                f"says {expected[name][:16]}… (a truncated copy or another version?). {hint}"
            )
    return digests


def cache_dir() -> Path:
    """Where preprocessed tensors are kept: ``$METARL_CACHE`` or ``~/.cache/metarl``.

    Not inside the data folder, which may be read-only (it is on the project machines).
    """
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "metarl").expanduser()


def source_key(digests: dict[str, str], version: str) -> str:
    """A short digest of the source files' digests and the preprocessing version."""
    text = version + "".join(f"{n}={d};" for n, d in sorted(digests.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(name: str, key: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Load ``<cache dir>/<name>-<key>.pt``, building and storing it first if absent.

    ``key`` is derived from the source files (:func:`source_key`), so a change of source
    gives a new file name and a rebuild. An unreadable cache file is rebuilt.
    """
    path = cache_dir() / f"{name}-{key}.pt"
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache is simply rebuilt
            pass
    data = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(data, path)
    return data
