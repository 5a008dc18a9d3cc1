"""Few-shot data: the real Omniglot/MNIST/Fashion-MNIST files, their errors, caches, splits,
the image-folder format and the episode sampler."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metarl.supervised.data import omniglot as omniglot_module
from metarl.supervised.data.episodes import ClassImages, sample_episodes
from metarl.supervised.data.files import DataError, dataset_dir, resolve_data_dir
from metarl.supervised.data.image_folder import image_folder_split
from metarl.supervised.data.mnist import FALLBACK_DIRS, load_idx_dataset, mnist_split
from metarl.supervised.data.omniglot import load_omniglot, omniglot_split

DATA_ROOT = resolve_data_dir(None)[0]  # $METARL_DATA as pytest starts, else ../shared/data
OMNIGLOT = DATA_ROOT / "omniglot"
MNIST = DATA_ROOT / "mnist"
FASHION = FALLBACK_DIRS["fashion-mnist"][0]  # where the loader looks (Debian's package)


def _need(path: Path, what: str) -> None:
    if not path.is_dir():
        pytest.skip(f"{what} not available at {path}")


@pytest.fixture(autouse=True)
def _isolated_data_env(monkeypatch, request):
    """The data root found as pytest started, and a cache shared by the tests of one machine
    (not ~/.cache)."""
    monkeypatch.setenv("METARL_DATA", str(DATA_ROOT))
    monkeypatch.setenv("METARL_CACHE", str(request.config.cache.mkdir("metarl-data")))


@pytest.fixture
def omniglot():
    _need(OMNIGLOT, "the Omniglot archives")
    return load_omniglot()


# --- Omniglot ------------------------------------------------------------------------------


def test_omniglot_counts_shapes_and_pixels(omniglot):
    images, names = omniglot["images"], omniglot["characters"]
    assert images.shape == (1623, 20, 28, 28) and images.dtype == torch.uint8
    assert len(set(names)) == 1623 and names[0] == "Alphabet_of_the_Magi/character01"
    assert len({n.split("/")[0] for n in names}) == 50
    # Strokes are bright on a dark background, and the antialiased resize leaves grey levels.
    assert images.float().mean() / 255 < 0.2
    assert len(torch.unique(images[0, 0])) > 2


def test_omniglot_nearest_resize_gives_the_maml_script_s_binary_images(omniglot):
    """``omniglot_resize=nearest`` reproduces what the MAML script's own call,
    ``Image.resize((28, 28), resample=LANCZOS)`` on the 1-bit PNG, gives (inverted): binary
    images; the default's antialiased ones differ from them only at the strokes' edges."""
    import io
    import zipfile

    with zipfile.ZipFile(OMNIGLOT / "images_background.zip") as zf:
        pngs = [zf.read(n) for n in sorted(zf.namelist()) if n.endswith(".png")][::2000]
    for png in pngs:
        script = Image.open(io.BytesIO(png)).resize((28, 28), resample=Image.LANCZOS)
        expected = 255 - np.asarray(script.convert("L"), dtype=np.uint8)
        assert np.array_equal(omniglot_module._decode(png, 28, "nearest"), expected)
    binary = load_omniglot(resize="nearest")["images"]
    assert binary.shape == omniglot["images"].shape
    assert set(torch.unique(binary).tolist()) == {0, 255}
    changed = (binary.float() - omniglot["images"].float()).abs() > 127
    assert 0 < changed.float().mean() < 0.05  # the same characters, edges aside
    with pytest.raises(ValueError, match="resize"):
        load_omniglot(resize="bilinear")
    # The antialiased images keep the cache key they had before the option existed.
    assert omniglot_module._VERSION.format(resize="lanczos") == "omniglot-v1-lanczos28-inverted"
    from metarl.experiments import load_config
    from metarl.supervised.classification_experiment import load_split

    config = load_config("omniglot-20w1s", {"omniglot_resize": "nearest"})
    assert torch.equal(load_split(config, "train").images[..., 0, :, :], binary)


def test_omniglot_maml_split_sizes_and_disjoint(omniglot):
    parts = {s: omniglot_split(omniglot, "maml", s) for s in ("train", "val", "test")}
    assert {s: p.n_classes for s, p in parts.items()} == {"train": 1100, "val": 100, "test": 423}
    sets = [set(p.classes.tolist()) for p in parts.values()]
    assert set.union(*sets) == set(range(1623)) and sum(map(len, sets)) == 1623
    assert all(p.random_rotation and p.rotations is None for p in parts.values())
    # Seeded: the same split every time.
    assert torch.equal(omniglot_split(omniglot, "maml", "test").classes, parts["test"].classes)


def test_omniglot_vinyals_split_has_rotations_as_classes(omniglot):
    parts = {s: omniglot_split(omniglot, "vinyals", s) for s in ("train", "val", "test")}
    assert {s: p.n_classes for s, p in parts.items()} == {"train": 4112, "val": 688, "test": 1692}
    chars = {s: set(p.classes.tolist()) for s, p in parts.items()}
    assert [len(c) for c in chars.values()] == [1028, 172, 423]
    assert not chars["train"] & chars["test"] and not chars["val"] & chars["test"]
    assert sorted(torch.bincount(parts["test"].rotations).tolist()) == [423] * 4
    test_alphabets = {omniglot["characters"][c].split("/")[0] for c in chars["test"]}
    assert "Gurmukhi" in test_alphabets and len(test_alphabets) == 13


def _copy_omniglot(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(OMNIGLOT, root / "omniglot")
    for p in (root / "omniglot").rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)  # the shared copy is read-only
    return root


def test_corrupt_omniglot_archive_is_reported(tmp_path):
    _need(OMNIGLOT, "the Omniglot archives")
    root = _copy_omniglot(tmp_path)
    archive = root / "omniglot" / "images_background.zip"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"images_background\.zip is corrupt: its SHA-256 is") as e:
        load_omniglot(str(root))
    assert "copy them there again" in str(e.value)
    # Without a checksum file, a truncated archive fails when it is opened.
    (root / "omniglot" / "SHA256SUMS").unlink()
    archive.write_bytes(bytes(data[:1000]))
    with pytest.raises(DataError, match="cannot be read as a zip archive"):
        load_omniglot(str(root))


def test_missing_data_is_reported(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"dataset 'omniglot' not found .*config key data_dir"):
        load_omniglot(str(tmp_path / "nowhere"))
    monkeypatch.setenv("METARL_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match=r"elsewhere/omniglot.*\$METARL_DATA"):
        dataset_dir(None, "omniglot")
    (tmp_path / "data" / "omniglot").mkdir(parents=True)
    with pytest.raises(DataError, match=r"images_background\.zip is missing"):
        load_omniglot(str(tmp_path / "data"))


def test_omniglot_cache_is_reused_and_rebuilt_when_the_source_changes(tmp_path, monkeypatch):
    _need(OMNIGLOT, "the Omniglot archives")
    monkeypatch.setenv("METARL_CACHE", str(tmp_path / "cache"))
    root = _copy_omniglot(tmp_path)
    builds = []

    def fake_build(folder, size, resize):  # the real decoding is tested above; count calls
        builds.append(folder)
        return {"images": torch.full((1623, 20, size, size), len(builds), dtype=torch.uint8),
                "characters": ["x"] * 1623}  # fmt: skip

    monkeypatch.setattr(omniglot_module, "_build", fake_build)
    assert load_omniglot(str(root))["images"][0, 0, 0, 0] == 1
    assert load_omniglot(str(root))["images"][0, 0, 0, 0] == 1 and len(builds) == 1
    # A changed archive (here: a zip comment, still a valid zip) with its new checksum.
    archive = root / "omniglot" / "images_evaluation.zip"
    archive.write_bytes(archive.read_bytes()[:-2] + b"\x04\x00note")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    sums = root / "omniglot" / "SHA256SUMS"
    lines = [ln for ln in sums.read_text().splitlines() if "images_evaluation" not in ln]
    sums.write_text("\n".join([*lines, f"{digest}  images_evaluation.zip"]) + "\n")
    assert load_omniglot(str(root))["images"][0, 0, 0, 0] == 2 and len(builds) == 2
    assert len(list((tmp_path / "cache").glob("omniglot28-*.pt"))) == 2


# --- MNIST and Fashion-MNIST -------------------------------------------------------------------


def test_mnist_real_files_counts_and_class_disjoint_split():
    _need(MNIST, "MNIST")
    images, labels = load_idx_dataset("mnist")
    assert images.shape == (70000, 28, 28) and labels.shape == (70000,)
    train_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(labels[:60000]).tolist() == train_counts
    assert abs(images[:60000].float().mean().item() / 255 - 0.1307) < 1e-3
    train, test = (
        mnist_split("mnist", [0, 1, 2, 3, 4], "train"),
        mnist_split("mnist", [0, 1, 2, 3, 4], "test"),
    )
    assert train.classes.tolist() == [0, 1, 2, 3, 4] and test.classes.tolist() == [5, 6, 7, 8, 9]
    assert test.min_count() == 5421 + 892  # digit 5: training + test file
    # The store holds each digit's images (check one against the raw arrays).
    first_seven = images[labels == 7][0]
    assert torch.equal(train.images[7, 0, 0], first_seven)


def test_fashion_mnist_real_files():
    _need(FASHION, "Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    images, labels = load_idx_dataset("fashion-mnist")
    assert images.shape == (70000, 28, 28)
    assert torch.bincount(labels).tolist() == [7000] * 10


def test_corrupt_mnist_file_is_reported(tmp_path):
    _need(MNIST, "MNIST")
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in MNIST.glob("*.gz"):
        shutil.copy(f, folder / f.name)
    raw = bytearray(gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one wrong label, re-compressed: no SHA256SUMS here
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="does not have the published MD5"):
        load_idx_dataset("mnist", str(tmp_path))


# --- image folders ---------------------------------------------------------------------------


def _image_folder(root: Path, per_class: int = 6) -> Path:
    """train/val/test CSVs over 3/2/2 classes of small random PNGs; val uses images/."""
    rng = np.random.default_rng(0)
    splits = {"train": ["n01", "n02", "n03"], "val": ["n04", "n05"], "test": ["n06", "n07"]}
    for split, labels in splits.items():
        rows = ["filename,label"]
        for label in labels:
            folder = root / ("images" if split == "val" else label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                name = f"{label}{i:04d}.png"
                pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / name)
                rows.append(f"{name},{label}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def test_image_folder_loads_splits_and_episodes(tmp_path, monkeypatch):
    root = _image_folder(tmp_path / "mini")
    train = image_folder_split(root, "train", size=16)
    assert train.images.shape == (3, 6, 3, 16, 16) and train.n_classes == 3
    val = image_folder_split(root, "val", size=16)
    assert val.n_classes == 2
    expected = Image.open(root / "n01" / "n010002.png").convert("RGB")
    expected = np.asarray(expected.resize((16, 16), Image.Resampling.LANCZOS)).transpose(2, 0, 1)
    assert torch.equal(train.images[0, 2], torch.from_numpy(expected.copy()))
    batch = sample_episodes(train, 4, 3, 2, 1, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (4, 6, 3, 16, 16) and batch.query_x.shape == (4, 3, 3, 16, 16)
    # Cached: a second load decodes nothing; a changed image is re-read.
    import metarl.supervised.data.image_folder as image_folder

    calls = []
    real_load = image_folder._load
    monkeypatch.setattr(image_folder, "_load", lambda p, s: calls.append(p) or real_load(p, s))
    image_folder_split(root, "train", size=16)
    assert calls == []
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(root / "n01" / "n010002.png")
    changed = image_folder_split(root, "train", size=16)
    assert len(calls) == 18 and changed.images[0, 2].max() == 0


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        image_folder_split(tmp_path / "nothing", "train")
    root = _image_folder(tmp_path / "mini", per_class=2)
    (root / "test.csv").unlink()
    with pytest.raises(DataError, match=r"test\.csv is missing.*filename,label"):
        image_folder_split(root, "test")
    (root / "n02" / "n020001.png").unlink()
    with pytest.raises(DataError, match="image 'n020001.png' of class 'n02' not found"):
        image_folder_split(root, "train")


# --- episodes --------------------------------------------------------------------------------


def _tagged_classes(n_source: int = 12, per_class: int = 10, counts=None, **kw) -> ClassImages:
    """Images whose pixels say what they are: [0,0] = class + 1, [0,1] = index, [1,0] = 200."""
    images = torch.zeros(n_source, per_class, 1, 4, 4, dtype=torch.uint8)
    images[:, :, 0, 0, 0] = torch.arange(1, n_source + 1).view(-1, 1)
    images[:, :, 0, 0, 1] = torch.arange(per_class).view(1, -1)
    images[:, :, 0, 1, 0] = 200  # a marker below the top-left corner shows the rotation
    return ClassImages(images, torch.arange(n_source), counts=counts, **kw)


def _ids(x: torch.Tensor) -> torch.Tensor:
    """(…, 1, 4, 4) floats -> (…, 2) long: (source class, image index) of unrotated images."""
    pix = (x[..., 0, 0, :2] * 255).round().long()
    return torch.stack([pix[..., 0] - 1, pix[..., 1]], dim=-1)


def test_episode_labels_shapes_and_no_overlap():
    split = _tagged_classes(counts=torch.tensor([10] * 6 + [4] * 6))
    batch = sample_episodes(split, 50, 5, 2, 2, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (50, 10, 1, 4, 4) and batch.query_x.shape == (50, 10, 1, 4, 4)
    assert batch.support_y.dtype == torch.long
    assert batch.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    sup, qry = _ids(batch.support_x), _ids(batch.query_x)
    for t in range(50):
        label_to_class = {}
        for ids, labels in ((sup[t], batch.support_y[t]), (qry[t], batch.query_y[t])):
            for (c, _), y in zip(ids.tolist(), labels.tolist()):
                assert label_to_class.setdefault(y, c) == c  # one class per label
        assert len(set(label_to_class.values())) == 5  # N distinct classes
        images = [tuple(i) for i in torch.cat([sup[t], qry[t]]).tolist()]
        assert len(set(images)) == 20  # support and query never share an image
        assert all(i < (10 if c < 6 else 4) for c, i in images)  # never a padding slot


def test_episodes_are_reproducible_and_labels_random():
    split = _tagged_classes()
    a = sample_episodes(split, 8, 5, 1, 3, torch.Generator().manual_seed(3))
    b = sample_episodes(split, 8, 5, 1, 3, torch.Generator().manual_seed(3))
    c = sample_episodes(split, 8, 5, 1, 3, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.support_x, c.support_x)
    # Label 0 is not always the lowest class index: the label order is random.
    first = _ids(a.support_x)[:, 0, 0]
    assert len(set(first.tolist())) > 1


def test_fixed_and_random_rotations():
    fixed = _tagged_classes(rotations=torch.tensor([1] * 12))
    batch = sample_episodes(fixed, 4, 3, 1, 1, torch.Generator().manual_seed(0))
    # rot90 by k=1 (counter-clockwise) moves the marker at (1, 0) to (3, 1).
    assert (batch.support_x[..., 0, 3, 1] * 255).round().eq(200).all()
    random = _tagged_classes(random_rotation=True)
    batch = sample_episodes(random, 64, 5, 2, 1, torch.Generator().manual_seed(0))
    x = batch.support_x.view(64, 5, 2, 4, 4)
    marker = {(1, 0): 0, (3, 1): 1, (2, 3): 2, (0, 2): 3}
    seen = set()
    for t in range(64):
        for n in range(5):
            where = [(int(i), int(j)) for i, j in ((x[t, n, 0] * 255).round() == 200).nonzero()]
            assert len(where) == 1
            assert ((x[t, n, 1] * 255).round() == 200).nonzero().tolist() == [list(where[0])]
            seen.add(marker[where[0]])  # both shots of a class share its rotation
    assert seen == {0, 1, 2, 3}


def test_too_few_classes_or_images_is_an_error():
    with pytest.raises(ValueError, match="20-way episodes need 20 classes"):
        sample_episodes(_tagged_classes(), 2, 20, 1, 1, torch.Generator())
    with pytest.raises(ValueError, match="only 4"):
        sample_episodes(
            _tagged_classes(counts=torch.tensor([4] * 12)), 2, 5, 3, 2, torch.Generator()
        )


def test_large_classes_sample_distinct_images_uniformly():
    """Classes of many images take the rejection-sampling path (MNIST has ~7,000 per class)."""
    images = torch.zeros(2, 200, 1, 2, 2, dtype=torch.uint8)
    images[:, :, 0, 0, 0] = torch.arange(200)  # image index
    images[:, :, 0, 0, 1] = torch.tensor([[0], [1]])  # class
    split = ClassImages(images, torch.arange(2), counts=torch.tensor([200, 120]))
    batch = sample_episodes(split, 4000, 2, 4, 3, torch.Generator().manual_seed(0))
    x = torch.cat([batch.support_x.view(4000, 2, 4, 4), batch.query_x.view(4000, 2, 3, 4)], 2)
    tags = (x * 255).round().long()  # (episode, label, image, pixel)
    index, cls = tags[..., 0], tags[..., 1]
    assert (cls == cls[..., :1]).all()  # one class per label
    assert all(len(set(row)) == 7 for row in index.view(-1, 7).tolist())  # distinct images
    small = index[cls == 1]
    assert small.max() < 120  # never a padding slot
    hist = torch.bincount(small, minlength=120).float()  # about uniform over the 120
    assert hist.min() > 0.75 * hist.mean() and hist.max() < 1.25 * hist.mean()
