"""The model inputs a run logged with log_evaluation keeps in eval/: exactly the float32 numbers the model took.

    save(folder, "train", x)             # x float32 (N, C, H, W)
    stored = load(folder, "train")       # None if absent; stored[rows] -> float32 (len(rows), C, H, W)

Images that were uint8 before ToTensor() (and Normalize) take at most 256 distinct values per channel. Those are
kept as uint8 codes into a per-channel table of the values (`<split>_codes.npy` + `<split>_values.npy`): the same
float32 numbers, a quarter of the disk (60,000 MNIST training images: 47 MB instead of 188 MB). Anything else is
kept as float32 (`<split>_inputs.npy`). Codes are memory-mapped and decoded per request, so serving a few
pictures does not read the whole set.
"""
from pathlib import Path

import numpy as np

PALETTE = 256
SAMPLE = 200_000      # values per channel whose distinct ones propose its table


class StoredInputs:
    """Read access to one stored set: shape, len() and float32 rows by index (any numpy index)."""

    def __init__(self, codes=None, values=None, floats=None, source=""):
        self._codes, self._values, self._floats = codes, values, floats
        self.source = source          # the file(s), e.g. "eval/test_codes.npy + eval/test_values.npy"
        self.shape = tuple((floats if floats is not None else codes).shape)
        self.compact = floats is None

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        if not self.compact:     # a copy in memory: a slice of the memory map would be a read-only view
            return np.array(self._floats[rows], dtype=np.float32)
        codes = np.asarray(self._codes[rows])
        channels = np.arange(self.shape[1]).reshape(1, -1, *([1] * (codes.ndim - 2)))
        return self._values[channels, codes]

    def read(self) -> np.ndarray:
        """Every row, float32."""
        return self[:]


def paths(folder, split) -> dict:
    folder = Path(folder)
    return {"floats": folder / f"{split}_inputs.npy", "codes": folder / f"{split}_codes.npy",
            "values": folder / f"{split}_values.npy"}


def exists(folder, split) -> bool:
    p = paths(folder, split)
    return p["floats"].is_file() or (p["codes"].is_file() and p["values"].is_file())


def palette(x: np.ndarray):
    """(codes uint8 (N, C, ...), values float32 (C, 256)) when every channel of x has at most 256 distinct values
    (NaN-free), else None. A sample of rows proposes each channel's table; a full unique() only when it misses."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or not len(x) or np.isnan(x).any():
        return None
    per_row = int(np.prod(x.shape[2:], dtype=np.int64)) or 1
    step = max(1, len(x) * per_row // SAMPLE)
    codes = np.empty(x.shape, dtype=np.uint8)
    values = np.zeros((x.shape[1], PALETTE), dtype=np.float32)
    for c in range(x.shape[1]):
        channel = x[:, c]
        distinct = np.unique(channel[::step])
        if len(distinct) > PALETTE:
            return None
        where = np.minimum(np.searchsorted(distinct, channel), len(distinct) - 1)
        if not np.array_equal(distinct[where], channel):
            distinct = np.unique(channel)
            if len(distinct) > PALETTE:
                return None
            where = np.searchsorted(distinct, channel)
        values[c, :len(distinct)] = distinct
        codes[:, c] = where
    return codes, values


def save(folder, split, inputs) -> bool:
    """Store `inputs` (float32 (N, C, ...)) for `split`; returns whether they went in as codes. Each file is
    written atomically, and in an order that leaves a reader, at any moment, the old set whole, the new one whole
    or none: old codes go before the new table (new codes must never meet an old table, nor old codes a new one),
    the new codes come last and win over old floats once both exist, and floats come after the codes are gone."""
    from deepdive.atomic import atomic_save_npy

    p = paths(folder, split)
    packed = palette(inputs)
    if packed is not None:
        p["codes"].unlink(missing_ok=True)
        atomic_save_npy(p["values"], packed[1])
        atomic_save_npy(p["codes"], packed[0])
        p["floats"].unlink(missing_ok=True)
    else:
        p["codes"].unlink(missing_ok=True)
        p["values"].unlink(missing_ok=True)
        atomic_save_npy(p["floats"], np.asarray(inputs, dtype=np.float32))
    return packed is not None


def load(folder, split) -> StoredInputs | None:
    """The stored set of `split`, memory-mapped; None when there is none."""
    p = paths(folder, split)
    if p["codes"].is_file() and p["values"].is_file():
        return StoredInputs(codes=np.load(p["codes"], mmap_mode="r"), values=np.load(p["values"]),
                            source=f"eval/{p['codes'].name} + eval/{p['values'].name}")
    if p["floats"].is_file():
        return StoredInputs(floats=np.load(p["floats"], mmap_mode="r"), source=f"eval/{p['floats'].name}")
    return None
