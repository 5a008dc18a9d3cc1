"""``metarl data``: where each dataset comes from, what is on this machine, and fetching it.

Every file has a canonical public source and a checksum that is verified before the file is put
in place. The checksum is the strongest one known for the canonical file:

* ``sha256-gunzip``: SHA-256 of the decompressed bytes (MNIST, Fashion-MNIST: the IDX files
  are what matter; mirrors recompress them, which changes the ``.gz`` bytes but not these);
* ``sha256``: SHA-256 of the file itself (CIFAR-10's archive, as Keras checks it);
* ``sha256-pngs``: SHA-256 of the archive's images, invariant to re-zipping: the ``sha256sum``
  lines of its ``.png`` members sorted by path, hashed (Omniglot; the recipe of
  ``../shared/data/omniglot/README.md``, so the same digest checks an extracted folder with
  ``find images_background -name '*.png' | LC_ALL=C sort | xargs sha256sum | sha256sum``);
* ``md5``: the publisher's checksum where that is all there is, accepted beside a SHA-256 kind
  (Omniglot's canonical archives, as ``torchvision`` checks them).

After a successful fetch the folder's ``SHA256SUMS`` records the SHA-256 of every file, so the
loaders check the exact bytes from then on (:func:`metarl.supervised.data.files.verify_files`).
Downloads resume a partial file (HTTP ``Range``) and never replace a good file by a bad one.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from metarl.loop import progress_bar
from metarl.supervised.data.files import CHECKSUMS, DataError, read_checksums, sha256_file


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name in the dataset folder, its URL and its checksum."""

    name: str
    url: str
    checksum: str  # "<kind>:<hex>", kind one of sha256, sha256-gunzip, sha256-pngs, md5
    also: tuple[str, ...] = ()  # further checksums, any of which also accepts the file

    @property
    def checksums(self) -> tuple[str, ...]:
        return (self.checksum, *self.also)


@dataclass(frozen=True)
class DatasetSource:
    """A dataset as ``metarl data`` knows it."""

    name: str
    description: str
    files: tuple[RemoteFile, ...]
    note: str = ""


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # yann.lecun.com refuses downloads
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_OMNIGLOT = "https://github.com/brendenlake/omniglot/raw/master/python/"

SOURCES: dict[str, DatasetSource] = {
    s.name: s
    for s in (
        DatasetSource(
            "omniglot", "Omniglot (Lake et al. 2015), the two canonical archives",
            (
                RemoteFile("images_background.zip", _OMNIGLOT + "images_background.zip",
                           "sha256-pngs:deaa02f758afda524b3a045c7af40311f2d9ded3e2a39f715ece8470d474bc6a",
                           also=("md5:68d2efa1b9178cc56df9314c21c6e718",)),
                RemoteFile("images_evaluation.zip", _OMNIGLOT + "images_evaluation.zip",
                           "sha256-pngs:3d5e035f27423c362bf9a181af649b43cda64c1008f842177ddc5203269c901e",
                           also=("md5:6b91aef0f799c5bb55b94e3f2daec811",)),
            ),
            note="the Vinyals split lists (split=vinyals) are those of "
            "jakesnell/prototypical-networks",
        ),
        DatasetSource(
            "mnist", "MNIST (LeCun, Cortes & Burges), the four IDX files",
            tuple(RemoteFile(name, _MNIST + name, f"sha256-gunzip:{digest}") for name, digest in (
                ("train-images-idx3-ubyte.gz",
                 "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
                ("train-labels-idx1-ubyte.gz",
                 "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
                ("t10k-images-idx3-ubyte.gz",
                 "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
                ("t10k-labels-idx1-ubyte.gz",
                 "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
            )),
        ),
        DatasetSource(
            "fashion-mnist", "Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), the four IDX files",
            tuple(RemoteFile(name, _FASHION + name, f"sha256-gunzip:{digest}") for name, digest in (
                ("train-images-idx3-ubyte.gz",
                 "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
                ("train-labels-idx1-ubyte.gz",
                 "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
                ("t10k-images-idx3-ubyte.gz",
                 "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
                ("t10k-labels-idx1-ubyte.gz",
                 "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
            )),
            note="also `apt-get install dataset-fashion-mnist` (Debian), found automatically",
        ),
        DatasetSource(
            "cifar10", "CIFAR-10 (Krizhevsky 2009), the python version",
            (RemoteFile("cifar-10-python.tar.gz",
                        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                        "sha256:6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                        also=("md5:c58f30108f718f92721af3b95e74349a",)),),
        ),
        DatasetSource(
            "miniimagenet", "MiniImageNet (Vinyals et al. 2016; Ravi & Larochelle 2017 split)", (),
            note="no canonical public download exists: build the image folder from ImageNet "
            "with the Ravi & Larochelle split CSVs and pass it as data_dir (dataset=image_folder)",
        ),
    )
}  # fmt: skip
"""Every dataset ``metarl data`` can list or fetch."""


def file_digest(path: Path, kind: str) -> str:
    """The hex digest of ``path`` of the given kind (see the module docstring)."""
    if kind == "sha256":
        return sha256_file(path)
    if kind == "sha256-pngs":
        return _png_members_sha256(path)
    digest = hashlib.md5() if kind == "md5" else hashlib.sha256()
    opener = gzip.open if kind == "sha256-gunzip" else open
    with opener(path, "rb") as f:  # type: ignore[operator]
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _png_members_sha256(path: Path) -> str:
    """SHA-256 of ``sha256sum``'s lines for the ``.png`` members of a zip, sorted by path."""
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))
        lines = "".join(f"{hashlib.sha256(archive.read(n)).hexdigest()}  {n}\n" for n in names)
    return hashlib.sha256(lines.encode()).hexdigest()


def check(path: Path, checksum: str | tuple[str, ...]) -> bool:
    """Whether ``path`` matches ``checksum`` (``"<kind>:<hex>"``) or any of several.

    A damaged gzip or zip is False.
    """
    for one in (checksum,) if isinstance(checksum, str) else checksum:
        kind, expected = one.split(":", 1)
        try:
            if file_digest(path, kind) == expected:
                return True
        except (OSError, EOFError, gzip.BadGzipFile, zipfile.BadZipFile, zlib.error):
            continue
    return False


def download(url: str, path: Path, progress: bool = True) -> None:
    """Download ``url`` to ``path``, continuing a partial ``path`` if the server allows it."""
    done = path.stat().st_size if path.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)  # noqa: S310 - http(s) and file
    except urllib.error.HTTPError as e:
        if e.code == 416:  # the partial file is already complete
            return
        raise DataError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"cannot download {url}: {getattr(e, 'reason', e)}") from None
    with response:
        resumed = bool(done) and getattr(response, "status", 200) == 206
        total = response.headers.get("Content-Length")
        total = int(total) + (done if resumed else 0) if total else None
        mode = "ab" if resumed else "wb"
        bar = progress_bar(total=total, initial=done if resumed else 0, unit="B", unit_scale=True,
                           desc=path.name, disable=not progress)  # fmt: skip
        with path.open(mode) as f, bar:
            while block := response.read(1 << 16):
                f.write(block)
                bar.update(len(block))


def fetch(name: str, to: Path, progress: bool = True) -> list[Path]:
    """Download the dataset ``name`` into ``to/<name>/`` and verify every file.

    A file already there and valid is kept; a partial download (``<file>.part``) is resumed.
    A file whose checksum does not match is removed and reported, and nothing replaces the
    good copy it might have been meant to replace.

    Returns:
        The dataset's files.

    Raises:
        DataError: an unknown dataset, one without a public source, a failed download or a
            checksum mismatch.
    """
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(SOURCES)}")
    source = SOURCES[name]
    if not source.files:
        raise DataError(f"{name}: {source.note}")
    folder = to / name
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for remote in source.files:
        path = folder / remote.name
        if not (path.is_file() and check(path, remote.checksums)):
            partial = path.with_name(path.name + ".part")
            download(remote.url, partial, progress)
            if not check(partial, remote.checksums):
                partial.unlink()
                raise DataError(
                    f"{remote.url} does not match its published checksum "
                    f"({' or '.join(remote.checksums)}); "
                    "the download was removed. Try again later or from another network"
                )
            os.replace(partial, path)
        paths.append(path)
    _record_sha256(folder, [p.name for p in paths])
    return paths


def _record_sha256(folder: Path, names: list[str]) -> None:
    """Add the files' SHA-256 to ``folder/SHA256SUMS`` (what the loaders check)."""
    sums = read_checksums(folder) or {}
    sums.update({n: sha256_file(folder / n) for n in names})
    lines = "".join(f"{digest}  {n}\n" for n, digest in sorted(sums.items()))
    (folder / CHECKSUMS).write_text(lines)


@dataclass(frozen=True)
class FileStatus:
    """What ``metarl data list`` says of one file."""

    name: str
    bytes: int | None  # None: missing
    status: str  # "verified", "missing", "CHECKSUM MISMATCH", "present (no checksum)"


def status(name: str, folder: Path | None) -> list[FileStatus]:
    """Each file of dataset ``name`` in ``folder`` (None: not found) and its checksum status."""
    rows = []
    recorded = (read_checksums(folder) or {}) if folder is not None else {}
    for remote in SOURCES[name].files:
        path = folder / remote.name if folder is not None else None
        if path is None or not path.is_file():
            rows.append(FileStatus(remote.name, None, "missing"))
            continue
        ok = check(path, remote.checksums) or recorded.get(remote.name) == sha256_file(path)
        rows.append(FileStatus(remote.name, path.stat().st_size,
                               "verified" if ok else "CHECKSUM MISMATCH"))  # fmt: skip
    return rows
