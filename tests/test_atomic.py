"""deepdive.atomic: a failed write leaves the old file and no temp file behind."""
import os

import pytest

from deepdive.atomic import atomic_open, atomic_write_text


def test_error_inside_the_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "x.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(target) as f:
            f.write(b"new, half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_error_before_the_file_object_exists_removes_the_temp_file(tmp_path, monkeypatch):
    def refuse(fd, mode):
        raise PermissionError("fchmod refused")

    monkeypatch.setattr(os, "fchmod", refuse)
    with pytest.raises(PermissionError, match="fchmod refused"):
        with atomic_open(tmp_path / "y.bin"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_written_file_gets_the_mode_open_would_give(tmp_path):
    target = tmp_path / "z.txt"
    atomic_write_text(target, "hello")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "hello"
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
