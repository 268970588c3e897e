"""deepdive.analysis.stored_inputs: a log_evaluation run's inputs come back as the exact float32 numbers the model
took, kept as uint8 codes where each channel has at most 256 values, and no crash leaves a stale set readable."""
import numpy as np
import pytest

from deepdive.analysis import stored_inputs as si


def from_uint8(rng, shape, mean=None, std=None):
    x = rng.integers(0, 256, shape, dtype=np.uint8).astype(np.float32) / 255.0
    if mean is not None:    # torchvision's Normalize: a per-channel affine map, still 256 values per channel
        x = (x - np.asarray(mean, np.float32).reshape(1, -1, 1, 1)) / np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return x


@pytest.mark.parametrize("shape, mean, std", [((300, 1, 28, 28), None, None),
                                              ((200, 3, 8, 8), (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))])
def test_images_from_uint8_come_back_exactly_as_codes(tmp_path, shape, mean, std):
    x = from_uint8(np.random.default_rng(0), shape, mean, std)
    assert si.save(tmp_path, "train", x) is True
    assert not (tmp_path / "train_inputs.npy").exists()
    assert (tmp_path / "train_codes.npy").stat().st_size < x.nbytes / 3.5      # a quarter, plus the header
    stored = si.load(tmp_path, "train")
    assert stored.compact and stored.shape == x.shape and len(stored) == len(x)
    assert stored.source == "eval/train_codes.npy + eval/train_values.npy"
    back = stored.read()
    assert back.dtype == np.float32 and np.array_equal(back, x)
    rows = [7, 2, 2, 150]
    assert np.array_equal(stored[rows], x[rows]) and np.array_equal(stored[3:9], x[3:9])


def test_other_inputs_stay_float32(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.random((50, 3, 16, 16), dtype=np.float32)          # thousands of values per channel
    assert si.save(tmp_path, "test", x) is False
    stored = si.load(tmp_path, "test")
    assert not stored.compact and stored.source == "eval/test_inputs.npy" and np.array_equal(stored.read(), x)
    # the sample's table misses one value (row 1999 is not among the sampled rows): the full count decides
    y = rng.integers(0, 200, (2000, 1, 28, 28)).astype(np.float32) / 255.0
    y[1999, 0, 27, 27] = 0.123456
    codes = si.palette(y)
    assert codes is not None and np.array_equal(codes[1][0][codes[0][:, 0]], y[:, 0])
    y[1998, 0] = rng.random((28, 28))                           # now past 256 values
    assert si.palette(y) is None
    nan = from_uint8(rng, (10, 1, 4, 4))
    nan[0, 0, 0, 0] = np.nan
    assert si.palette(nan) is None


def test_storing_again_the_other_way_replaces_the_old_set(tmp_path):
    rng = np.random.default_rng(2)
    floats, images = rng.random((20, 1, 5, 5), dtype=np.float32), from_uint8(rng, (20, 1, 5, 5))
    si.save(tmp_path, "test", floats)
    si.save(tmp_path, "test", images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_codes.npy", "test_values.npy"]
    assert np.array_equal(si.load(tmp_path, "test").read(), images)
    si.save(tmp_path, "test", floats)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_inputs.npy"]
    assert np.array_equal(si.load(tmp_path, "test").read(), floats)


def test_new_codes_never_meet_an_old_table(tmp_path, monkeypatch):
    """Storing codes over codes: a crash after the new table is written leaves no set, not the old codes read
    through the new table."""
    from deepdive import atomic

    rng = np.random.default_rng(5)
    old, new = from_uint8(rng, (20, 1, 5, 5)), from_uint8(rng, (20, 1, 5, 5)) * 0.5
    si.save(tmp_path, "test", old)
    real = atomic.atomic_save_npy

    def crash_on_codes(path, array):
        if path.name.endswith("_codes.npy"):
            raise OSError("disk full")
        real(path, array)

    monkeypatch.setattr(atomic, "atomic_save_npy", crash_on_codes)
    with pytest.raises(OSError):
        si.save(tmp_path, "test", new)
    assert si.load(tmp_path, "test") is None


def test_a_half_written_set_is_no_set(tmp_path):
    """The table goes first: a crash before the codes are written leaves a table alone, which reads as no set
    (and neither do codes without their table)."""
    x = from_uint8(np.random.default_rng(3), (10, 1, 4, 4))
    si.save(tmp_path, "train", x)
    (tmp_path / "train_codes.npy").rename(tmp_path / "codes.bak")
    assert not si.exists(tmp_path, "train") and si.load(tmp_path, "train") is None
    (tmp_path / "codes.bak").rename(tmp_path / "train_codes.npy")
    (tmp_path / "train_values.npy").unlink()
    assert not si.exists(tmp_path, "train") and si.load(tmp_path, "train") is None
    assert si.exists(tmp_path, "test") is False


def test_log_evaluation_keeps_images_from_uint8_as_codes(tmp_path):
    """End to end: a normalised uint8 dataset goes in as codes, the analysis reads the model's exact inputs back
    (its stored predictions check out against the model), and the neighbours and served pictures come from them."""
    import torch
    from fastapi.testclient import TestClient
    from test_api import TinyNet

    import deepdive
    from deepdive.analysis.results import AnalysisResult
    from deepdive.web.app import create_app

    rng = np.random.default_rng(4)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    train_x = torch.from_numpy(from_uint8(rng, (120, 3, 32, 32), mean, std))
    test_x = torch.cat([train_x[[7, 60]], torch.from_numpy(from_uint8(rng, (30, 3, 32, 32), mean, std))])
    torch.manual_seed(0)
    run = deepdive.log_evaluation(TinyNet(), (test_x, torch.randint(0, 5, (32,))), class_names=list("abcde"),
                                  workspace=tmp_path / "ws", progress=False,
                                  train_data=(train_x, torch.randint(0, 5, (120,))))
    eval_dir = run.run_dir / "eval"
    assert sorted(p.name for p in eval_dir.glob("*_codes.npy")) == ["test_codes.npy", "train_codes.npy"]
    assert not list(eval_dir.glob("*_inputs.npy"))
    assert np.array_equal(si.load(eval_dir, "train").read(), train_x.numpy())
    res = AnalysisResult.load(run.run_dir, "test")
    assert res.summary["data_source"] == "eval/test_codes.npy + eval/test_values.npy"
    assert not [n for n in res.summary["notes"] if "stale" in n]       # the model reproduced its predictions
    nb = res.neighbours()
    assert nb["index"][:2, 0].tolist() == [7, 60] and np.allclose(nb["similarity"][:2, 0], 1.0, atol=1e-5)
    with TestClient(create_app(tmp_path / "ws")) as client:
        shown = client.get(f"/api/runs/{run.id}/splits/test/neighbours/0")
    assert shown.status_code == 200 and shown.json()["items"][0]["idx"] == 7
