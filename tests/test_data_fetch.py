"""`metarl data`: fetching from a source (a local HTTP server here: tests never use the network),
resuming a partial download, refusing a wrong checksum, and listing what is on the machine."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from metarl.cli import main
from metarl.supervised.data import fetch as fetch_module
from metarl.supervised.data.fetch import DatasetSource, RemoteFile, fetch
from metarl.supervised.data.files import DataError, read_checksums, sha256_file

PAYLOAD = gzip.compress(bytes(range(256)) * 400, mtime=0)
RAW_SHA256 = hashlib.sha256(bytes(range(256)) * 400).hexdigest()


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves PAYLOAD at /data.gz, honouring `Range: bytes=N-` like a real mirror."""

    ranges: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path != "/data.gz":
            self.send_error(404)
            return
        wanted = self.headers.get("Range")
        self.ranges.append(wanted or "")
        start = int(wanted.split("=")[1].rstrip("-")) if wanted else 0
        body = PAYLOAD[start:]
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _RangeHandler.ranges = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _source(monkeypatch, url: str, checksum: str) -> None:
    file = RemoteFile("data.gz", url, checksum)
    monkeypatch.setitem(
        fetch_module.SOURCES, "toy", DatasetSource("toy", "a test dataset", (file,))
    )


def test_fetch_downloads_verifies_and_records_sha256(tmp_path, monkeypatch, server):
    _source(monkeypatch, f"{server}/data.gz", f"sha256-gunzip:{RAW_SHA256}")
    (path,) = fetch("toy", tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert read_checksums(tmp_path / "toy") == {"data.gz": sha256_file(path)}
    assert fetch("toy", tmp_path, progress=False) == [path]  # a valid file is kept
    assert _RangeHandler.ranges == [""]  # and not downloaded again


def test_a_partial_download_is_resumed(tmp_path, monkeypatch, server):
    _source(monkeypatch, f"{server}/data.gz", f"md5:{hashlib.md5(PAYLOAD).hexdigest()}")
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "data.gz.part").write_bytes(PAYLOAD[:300])  # an interrupted download
    (path,) = fetch("toy", tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD and _RangeHandler.ranges == ["bytes=300-"]
    assert not (folder / "data.gz.part").exists()


def test_a_wrong_checksum_is_refused_and_nothing_is_put_in_place(tmp_path, monkeypatch, server):
    _source(monkeypatch, f"{server}/data.gz", "sha256-gunzip:" + "0" * 64)
    with pytest.raises(DataError, match="does not match its published checksum"):
        fetch("toy", tmp_path, progress=False)
    assert list((tmp_path / "toy").iterdir()) == []


def test_file_urls_and_the_cli(tmp_path, monkeypatch, capsys):
    source = tmp_path / "mirror" / "data.gz"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    _source(monkeypatch, source.as_uri(), f"sha256-gunzip:{RAW_SHA256}")
    root = tmp_path / "root"
    assert main(["data", "fetch", "toy", "--to", str(root), "--no-progress"]) == 0
    assert "1 file(s) verified" in capsys.readouterr().out
    monkeypatch.setenv("METARL_DATA", str(root))
    assert main(["data", "list", "toy"]) == 0
    out = capsys.readouterr().out
    assert "data.gz" in out and "verified" in out
    (root / "toy" / "data.gz").write_bytes(PAYLOAD[:-10])  # damaged since
    assert main(["data", "list", "toy"]) == 0
    assert "CHECKSUM MISMATCH" in capsys.readouterr().out
    assert main(["data", "fetch", "miniimagenet"]) == 1
    assert "no canonical public download" in capsys.readouterr().err


def test_a_missing_dataset_names_the_fetch_command(tmp_path):
    from metarl.supervised.data.files import dataset_dir

    with pytest.raises(DataError, match=r"metarl data fetch omniglot --to"):
        dataset_dir(str(tmp_path), "omniglot")
    assert not Path(tmp_path / "omniglot").exists()


def _zip_of_pngs(path: Path, members: dict[str, bytes]) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("set/", b"")  # directory entries do not count
        archive.writestr("set/notes.txt", b"not an image")
        for name, data in reversed(members.items()):  # stored out of order on purpose
            archive.writestr(name, data)


def test_the_image_digest_is_sha256sum_of_the_extracted_images(tmp_path):
    """`sha256-pngs` equals the documented shell recipe run by coreutils on the extracted folder,
    and does not change when the archive is rebuilt with other compression."""
    import shutil
    import subprocess
    import zipfile

    if shutil.which("sha256sum") is None:
        pytest.skip("coreutils sha256sum is not installed")
    members = {f"set/A_{i % 3}/c{i:02d}/{i}_0{i % 7}.png": bytes([i]) * (50 + i) for i in range(12)}
    _zip_of_pngs(tmp_path / "a.zip", members)
    with zipfile.ZipFile(tmp_path / "b.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as b:
        for name, data in members.items():
            b.writestr(name, data)
    zipfile.ZipFile(tmp_path / "a.zip").extractall(tmp_path / "out")
    recipe = "find set -name '*.png' | LC_ALL=C sort | xargs sha256sum | sha256sum"
    shell = subprocess.run(
        recipe,
        shell=True,
        cwd=tmp_path / "out",
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()[0]
    assert fetch_module.file_digest(tmp_path / "a.zip", "sha256-pngs") == shell
    assert fetch_module.file_digest(tmp_path / "b.zip", "sha256-pngs") == shell
    assert sha256_file(tmp_path / "a.zip") != sha256_file(tmp_path / "b.zip")
    members["set/A_0/c00/0_00.png"] = b"changed"
    _zip_of_pngs(tmp_path / "c.zip", members)
    assert fetch_module.file_digest(tmp_path / "c.zip", "sha256-pngs") != shell


def test_any_listed_checksum_accepts_a_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    md5, sha = hashlib.md5(b"abc").hexdigest(), hashlib.sha256(b"abc").hexdigest()
    assert fetch_module.check(path, ("sha256:" + "0" * 64, f"md5:{md5}"))
    assert fetch_module.check(path, f"sha256:{sha}")
    assert not fetch_module.check(path, ("sha256:" + "0" * 64, "md5:" + "0" * 32))
    assert not fetch_module.check(path, "sha256-pngs:" + "0" * 64)  # not a zip: False, no error


def test_every_published_file_has_a_sha256_kind_checksum():
    for source in fetch_module.SOURCES.values():
        for remote in source.files:
            assert remote.checksum.split(":")[0].startswith("sha256"), remote


def test_the_shared_omniglot_archives_verify_by_their_images():
    import os

    root = os.environ.get("METARL_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
    folder = Path(root) / "omniglot"
    if not (folder / "images_background.zip").is_file():
        pytest.skip("the shared Omniglot archives are not on this machine")
    for remote in fetch_module.SOURCES["omniglot"].files:  # by the image digest alone
        assert fetch_module.check(folder / remote.name, remote.checksum), remote.name


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_the_fetch_digests_match_the_idx_files_on_this_machine(name):
    """The table's SHA-256 of each decompressed IDX file, against copies that came another way
    (the shared data folder; Debian's dataset-fashion-mnist package)."""
    from metarl.supervised.data.files import dataset_dir
    from metarl.supervised.data.mnist import FALLBACK_DIRS

    try:
        folder = dataset_dir(None, name, FALLBACK_DIRS.get(name, ()))
    except DataError:
        pytest.skip(f"{name} is not on this machine")
    for remote in fetch_module.SOURCES[name].files:
        assert fetch_module.check(folder / remote.name, remote.checksum), remote.name


def test_a_benchmark_finds_its_dataset_where_the_loader_does(tmp_path, monkeypatch):
    """Fashion-MNIST from Debian's package (outside the data root) counts as present, as it
    does for the loader; with neither, the benchmark says what is missing."""
    from metarl.benchmarks.runner import missing_dataset
    from metarl.supervised.data import mnist

    system = tmp_path / "system" / "fashion-mnist"
    system.mkdir(parents=True)
    monkeypatch.setenv("METARL_DATA", str(tmp_path / "empty"))
    monkeypatch.setitem(mnist.FALLBACK_DIRS, "fashion-mnist", (system,))
    assert missing_dataset("fashion-mnist-5w1s") is None
    system.rmdir()
    assert "dataset 'fashion-mnist' not found" in missing_dataset("fashion-mnist-5w1s")
