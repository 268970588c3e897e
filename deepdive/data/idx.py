"""Reader (and a small writer) for the idx format that MNIST and Fashion-MNIST ship in.

Layout: magic = 0x00 0x00 <dtype code> <ndim>, then ndim big-endian uint32 sizes, then the data (big-endian).
Files may be gzip-compressed; that is detected from the gzip magic bytes, never from the file name.
Every structural problem becomes a DataError naming the file and what is wrong, never a numpy traceback.
"""
import gzip
import io
import struct
import zlib
from pathlib import Path

import numpy as np

from deepdive.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
# idx dtype code -> numpy dtype (big-endian, as the format prescribes)
DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CODES = {dt.newbyteorder(">"): code for code, dt in DTYPES.items()}


def read_bytes(path) -> bytes:
    """The file's content, gunzipped if it starts with the gzip magic. A corrupt gzip is a DataError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data: {e}") from None


def parse(data: bytes, name) -> np.ndarray:
    """Decode idx bytes into an array in native byte order; `name` is used in error messages."""
    if len(data) < 4:
        raise DataError(f"{name}: not an idx file: only {len(data)} bytes, an idx header needs at least 4")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DataError(f"{name}: not an idx file: bad magic number {data[:4].hex()} (must start with 0000)")
    if code not in DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in DTYPES)
        raise DataError(f"{name}: invalid idx dtype code 0x{code:02X} (known codes: {known})")
    if ndim == 0:
        raise DataError(f"{name}: invalid idx header: 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated: header declares {ndim} dimensions but the file has {len(data)} bytes")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "unexpected trailing data"
        dims = "×".join(map(str, shape))
        raise DataError(f"{name}: {problem}: header says {dims} = {expected} bytes of data, file has {actual}")
    # copy: frombuffer over bytes is read-only, and callers own (and may modify) what we return
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path) -> np.ndarray:
    """Read a raw or gzipped idx file, fully validated."""
    return parse(read_bytes(path), Path(path))


def load_pair(images_path, labels_path, num_classes=None):
    """Read an (images, labels) pair and check that they fit together: uint8 (N, H, W) images, N labels.

    Returns (uint8 images, int64 labels). With `num_classes`, labels must lie in 0..num_classes-1.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    return check_pair(images, labels, images_path, labels_path, num_classes)


def check_pair(images, labels, images_name, labels_name, num_classes=None):
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_name}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{labels_name}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_name} has {len(images)} images but {labels_name} has {len(labels)} labels; "
            "they must come from the same split"
        )
    if num_classes is not None and len(labels) and labels.max() >= num_classes:
        raise DataError(f"{labels_name}: label {labels.max()} out of range 0..{num_classes - 1}")
    return images, labels.astype(np.int64)


def to_bytes(array: np.ndarray) -> bytes:
    """Encode an array as idx bytes (used to write test fixtures and custom datasets)."""
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if dtype not in CODES:
        raise ValueError(f"idx cannot store dtype {array.dtype}")
    buf = io.BytesIO()
    buf.write(struct.pack(">HBB", 0, CODES[dtype], array.ndim))
    buf.write(struct.pack(f">{array.ndim}I", *array.shape))
    buf.write(array.astype(dtype, copy=False).tobytes())
    return buf.getvalue()
