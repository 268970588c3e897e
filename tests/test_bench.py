"""`deepdive bench` smoke test: a tiny subset, one epoch each, the output format (CPU, well under a minute)."""
import argparse
import json

import pytest

from deepdive.train import bench


def test_bench_smoke(mnist, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("deepdive.data.load_dataset", lambda *a, **k: mnist)  # the session's dataset
    out = tmp_path / "bench.jsonl"
    rc = bench.main(["--device", "cpu", "--presets", "fast", "--seeds", "1", "--epochs", "1", "--peer-epochs", "1",
                     "--limit-train", "2000", "--limit-test", "2000", "--no-progress", "--json-out", str(out)])
    assert rc == 0
    stdout = capsys.readouterr().out
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    records = [r for r in lines if "summary" not in r]
    assert {r["recipe"] for r in records} == {"reference", "fast"}
    for r in records:
        assert set(r) == {"recipe", "seed", "epoch", "train_seconds", "test_accuracy", "device"}
        assert r["device"] == "cpu" and r["epoch"] == 1 and r["train_seconds"] > 0
        # one epoch on 2000 images: far above chance (10%) for both recipes
        assert 0.5 < r["test_accuracy"] <= 1
    # the JSON lines also land in --json-out, and the table reads back from it
    recs, sums = bench.read_jsonl(out)
    assert recs == records and {s["recipe"] for s in sums} == {"reference", "fast"}
    table = stdout.strip().splitlines()[-5:]  # title, header, rule, reference, fast
    assert table[0].startswith("deepdive bench on cpu")
    assert table[1].split()[:2] == ["recipe", "seeds"]
    assert table[2].startswith("-")
    assert table[3].split()[:3] == ["reference", "1", "fp32"]
    assert table[4].split()[0] == "fast" and table[4].rstrip().endswith("x")  # speed-up vs the reference
    fast_summary, = [s for s in sums if s["recipe"] == "fast"]
    assert table[4].split()[2] == ("bf16" if fast_summary["bf16"] else "fp32")   # the precision it trained in


def test_time_to_and_table():
    rows = [{"recipe": "a", "seed": 0, "epoch": e, "train_seconds": 10.0 * e, "test_accuracy": acc, "device": "cpu"}
            for e, acc in [(1, 0.991), (2, 0.9951), (3, 0.996)]]
    assert bench.time_to(rows, 0.990) == 10.0
    assert bench.time_to(rows, 0.995) == 20.0
    assert bench.time_to(rows, 0.997) is None
    ref = [{"recipe": "reference", "seed": 0, "epoch": 1, "train_seconds": 100.0, "test_accuracy": 0.995,
            "device": "cpu"}]
    sums = [{"recipe": "reference", "seed": 0, "final": 0.995, "train_seconds": 100.0, "warmup_seconds": 0.0},
            {"recipe": "a", "seed": 0, "final": 0.996, "train_seconds": 30.0, "warmup_seconds": 18.5, "bf16": True},
            {"recipe": "a", "seed": 1, "final": 0.996, "train_seconds": 30.0, "warmup_seconds": 0.3, "bf16": False},
            {"recipe": "a", "seed": 2, "final": 0.996, "train_seconds": 30.0, "warmup_seconds": 0.4}]
    table = bench.format_table(ref + rows, sums, device="cpu").splitlines()
    a = next(line for line in table if line.startswith("a "))
    # reaches the reference's final 99.5% after 20 s where the reference took 100 s; the warm-up column shows
    # the first (cold) run's 18.5 s, not the median 0.4 s of runs that hit the compile caches
    assert a.split()[2] == "bf16/fp32" and next(x for x in table if x.startswith("reference")).split()[2] == "-"
    assert a.split()[-1] == "5.0x" and "99.60%" in a and "20.0s" in a and "18.5s" in a and "0.40s" not in a


def test_register_adds_bench_subcommand():
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--device", "cpu", "--presets", "fast,default", "--seeds", "3",
                              "--peer-epochs", "2", "--limit-train", "100"])
    assert args.func is bench.run
    assert (args.presets, args.seeds, args.peer_epochs, args.limit_train) == ("fast,default", 3, 2, 100)


def test_unknown_preset_is_a_clear_error(mnist, monkeypatch):
    from deepdive.errors import DeepdiveError

    monkeypatch.setattr("deepdive.data.load_dataset", lambda *a, **k: mnist)
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    with pytest.raises(DeepdiveError, match="unknown preset"):
        bench.run(parser.parse_args(["bench", "--presets", "turbo"]))
    with pytest.raises(DeepdiveError, match="not valid JSON"):
        bench.run(parser.parse_args(["bench", "--presets", "fast", "--overrides", "{batch_size: 1}"]))
    with pytest.raises(DeepdiveError, match="unknown training option"):
        bench.run(parser.parse_args(["bench", "--presets", "fast", "--overrides", '{"batchsize": 1}']))
