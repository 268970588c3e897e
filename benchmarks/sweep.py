"""Accuracy sweep over recipe variants: train each (variant, seed), report test accuracy and time.

    PYTHONPATH=. python benchmarks/sweep.py VARIANTS.json [--device cuda] [--out results.jsonl]
    PYTHONPATH=. python benchmarks/sweep.py '[{"name": "fast-lr.2", "preset": "fast", "overrides": {"lr": 0.2}}]'

A variant is {"name", "preset", "overrides" (optional), "epochs" (optional), "seeds" (optional, default [0])}.
Prints one JSON line per run and a table (median over seeds) last. This is how the presets in
deepdive/train/recipe.py were chosen; it imports only what the training path does, so it runs on the bare
GPU machine too (benchmarks/gpu_bench.sh).
"""
import argparse
import json
import os
import statistics
import sys
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", help="JSON list of variants, or a path to a file holding one")
    p.add_argument("--device", default="auto")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=os.environ.get("DEEPDIVE_DATA_DIR"))
    p.add_argument("--out", default=None, help="append JSON lines here too")
    args = p.parse_args(argv)

    import numpy as np

    from deepdive.data import load_dataset
    from deepdive.train.bench import print_jsonl
    from deepdive.train.recipe import evaluate, train

    text = open(args.variants).read() if os.path.exists(args.variants) else args.variants
    variants = json.loads(text)
    ds = load_dataset(args.dataset, data_dir=args.data_dir, progress=False)
    results = []
    out = open(args.out, "a") if args.out else None
    for v in variants:
        for seed in v.get("seeds", [0]):
            t0 = time.perf_counter()
            r = train(ds, v["preset"], epochs=v.get("epochs"), seed=seed, device=args.device,
                      overrides=v.get("overrides"), ensemble=v.get("ensemble", 1), progress=False)
            probs, _ = evaluate(r.model, ds.test_images, ds.test_labels)
            rec = {"name": v["name"], "seed": seed, "test_accuracy": float((probs.argmax(1) == ds.test_labels).mean()),
                   "val_acc": r.history[-1]["val_acc"], "best_val_acc": max(h["val_acc"] for h in r.history),
                   "train_seconds": round(r.train_seconds, 2), "warmup_seconds": round(r.warmup_seconds, 2),
                   "wall_seconds": round(time.perf_counter() - t0, 2), "epochs": len(r.history), "device": r.device}
            results.append(rec)
            print_jsonl(rec, out)
    print(f"\n{'variant':28s} {'seeds':>5s} {'test acc (median, min-max)':>28s} {'train s':>8s}")
    for name in dict.fromkeys(r["name"] for r in results):
        rs = [r for r in results if r["name"] == name]
        accs = [r["test_accuracy"] * 100 for r in rs]
        print(f"{name:28s} {len(rs):5d} {statistics.median(accs):10.2f}% ({min(accs):.2f}-{max(accs):.2f}) "
              f"{statistics.median(r['train_seconds'] for r in rs):8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
