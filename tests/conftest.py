"""Shared session fixtures (DESIGN.md): the dataset, one tiny trained run, the same run analysed.

The dataset comes from the normal deepdive cache ($DEEPDIVE_HOME, else ~/.cache/deepdive): a clean CI machine
downloads it once through the usual sources, later runs read the cache in about a second.
"""
import dataclasses
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from deepdive.store import DB_NAME, Store

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class RunFixture:
    workspace: Path
    store: Store  # open for the whole session, closed at teardown
    run_id: str
    run_dir: Path
    result: dict  # what train_and_evaluate returned
    summary: dict | None = None  # the analysis summary (analyzed_run only)


@pytest.fixture(scope="session")
def mnist():
    from deepdive.data import load_dataset

    return load_dataset("mnist", progress=False)


@pytest.fixture(scope="session")
def tiny_run(mnist, tmp_path_factory):
    """A workspace with one finished run: preset fast, 3000 training images, 1 epoch, 1000 test images."""
    from deepdive.train.run import train_and_evaluate

    workspace = tmp_path_factory.mktemp("tiny_ws")
    result = train_and_evaluate("mnist", "fast", workspace=workspace, epochs=1, limit_train=3000, limit_test=1000,
                                progress=False)
    store = Store.open(workspace, create=False)
    yield RunFixture(workspace, store, result["run_id"], Path(result["run_dir"]), result)
    store.close()


@pytest.fixture(scope="session")
def analyzed_run(tiny_run):
    """tiny_run after `deepdive.analysis.analyze` on its test split (summary in .summary)."""
    from deepdive.analysis import analyze

    summary = analyze(tiny_run.store, tiny_run.run_id, "test", progress=False)
    return dataclasses.replace(tiny_run, summary=summary)


@pytest.fixture(scope="module")
def res(analyzed_run):
    """analyzed_run's stored test-split analysis (deepdive.analysis.results.AnalysisResult), read per module."""
    from deepdive.analysis.results import AnalysisResult

    return AnalysisResult.load(analyzed_run.run_dir, "test")


@pytest.fixture(scope="module")
def client(analyzed_run):
    """A FastAPI TestClient of `deepdive serve` over analyzed_run's workspace."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from deepdive.web.app import create_app

    with TestClient(create_app(analyzed_run.workspace)) as c:
        yield c


@pytest.fixture(scope="session")
def copy_workspace():
    """copy(workspace, dest) -> dest: a copy of a workspace whose store may be open (e.g. tiny_run's).

    Never copy deepdive.sqlite* with shutil while this process has the store open: closing any file descriptor
    of a file drops all of this process's POSIX locks on it, so another process then takes the database for
    unused and deletes its WAL, losing writes. The database goes through SQLite's backup API instead.
    """

    def copy(workspace, dest):
        dest = Path(dest)
        shutil.copytree(workspace, dest, ignore=shutil.ignore_patterns(f"{DB_NAME}*"))
        with closing(sqlite3.connect(Path(workspace) / DB_NAME)) as src, closing(sqlite3.connect(dest / DB_NAME)) as dst:
            src.backup(dst)
        return dest

    return copy


@pytest.fixture(scope="session")
def test_output_dir():
    """./test-output/ (git-ignored): screenshots and other files worth looking at after a test run."""
    out = REPO / "test-output"
    out.mkdir(exist_ok=True)
    return out


@pytest.fixture(scope="session")
def run_cli():
    """Run `python -m deepdive ARGS...` in a subprocess; returns the CompletedProcess (text, captured)."""

    def run(*args, cwd=None, timeout=300, env=None):
        # PYTHONPATH lets the subprocess find this checkout even where the package is not installed.
        pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        full_env = {**os.environ, "PYTHONPATH": pythonpath, **(env or {})}
        return subprocess.run([sys.executable, "-m", "deepdive", *map(str, args)], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def ctrl_c_after_first_epoch():
    """`arm(monkeypatch)` makes recipe.train raise KeyboardInterrupt right after epoch 1 has been handed to its
    on_epoch hook (logged to the store, train_state.pt written): a Ctrl-C that cannot race the training."""
    from deepdive.train import recipe

    def arm(monkeypatch):
        real_train = recipe.train

        def train(*args, on_epoch, **kw):
            def hook(row):
                on_epoch(row)
                raise KeyboardInterrupt

            return real_train(*args, on_epoch=hook, **kw)

        monkeypatch.setattr(recipe, "train", train)

    return arm
