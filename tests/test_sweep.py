"""benchmarks/sweep.py smoke test: two seeds of a tiny variant, the optional measurements but --bn-recal (CPU)."""
import importlib.util
import json
from pathlib import Path

SWEEP = Path(__file__).resolve().parents[1] / "benchmarks" / "sweep.py"


def _sweep_module():
    spec = importlib.util.spec_from_file_location("sweep", SWEEP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_smoke(mnist, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("deepdive.data.load_dataset", lambda *a, **k: mnist)  # the session's dataset
    variants = [{"name": "tiny", "preset": "fast", "epochs": 1, "seeds": [0, 1], "limit_train": 1000,
                 "overrides": {"arch": "cnn-small"}}]
    out = tmp_path / "sweep.jsonl"
    rc = _sweep_module().main([json.dumps(variants), "--device", "cpu", "--out", str(out), "--per-epoch", "--tta"])
    assert rc == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seed"] for r in records] == [0, 1]
    for r in records:
        for key in ("test_accuracy", "test_accuracy_last", "test_accuracy_tta"):
            assert 0.5 < r[key] <= 1, (key, r[key])   # one epoch on 1000 images: far above chance (10%)
        # one epoch: the kept model is the last one, so their accuracies agree
        assert r["test_accuracy_last"] == r["test_accuracy"]
        assert [e["epoch"] for e in r["per_epoch"]] == [1]
        assert r["per_epoch"][0]["test_accuracy"] == r["test_accuracy"]
    table = capsys.readouterr().out.strip().splitlines()
    row = table[-1].split()
    assert row[0] == "tiny" and row[1] == "2" and row[-1].endswith("%")   # two seeds: an ensemble column
