"""Accuracy sweep over recipe variants: train each (variant, seed), report test accuracy and time.

    PYTHONPATH=. python benchmarks/sweep.py VARIANTS.json [--device cuda] [--out results.jsonl]
    PYTHONPATH=. python benchmarks/sweep.py '[{"name": "fast-lr.2", "preset": "fast", "overrides": {"lr": 0.2}}]'

A variant is {"name", "preset", "overrides" (optional), "epochs" (optional), "seeds" (optional, default [0])}.
Prints one JSON line per run and a table (median over seeds) last; for a variant with several seeds the table
also gives the accuracy of their probability-averaged ensemble (what `--ensemble K` would store as one model).
This is how the presets in deepdive/train/recipe.py were chosen; it imports only what the training path does,
so it runs on the bare GPU machine too (benchmarks/gpu_bench.sh).
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
    p.add_argument("--bn-recal", action="store_true",
                   help="also report test accuracy after re-estimating BatchNorm statistics on the 60,000 "
                        "un-augmented training images")
    args = p.parse_args(argv)

    import numpy as np

    from deepdive.data import load_dataset
    from deepdive.train.bench import print_jsonl
    from deepdive.train.recipe import evaluate, train

    text = open(args.variants).read() if os.path.exists(args.variants) else args.variants
    variants = json.loads(text)
    ds = load_dataset(args.dataset, data_dir=args.data_dir, progress=False)
    results, probs_by_variant = [], {}
    out = open(args.out, "a") if args.out else None
    for v in variants:
        for seed in v.get("seeds", [0]):
            t0 = time.perf_counter()
            r = train(ds, v["preset"], epochs=v.get("epochs"), seed=seed, device=args.device,
                      overrides=v.get("overrides"), ensemble=v.get("ensemble", 1), progress=False)
            probs, _ = evaluate(r.model, ds.test_images, ds.test_labels)
            probs_by_variant.setdefault(v["name"], []).append(probs)
            extra = {}
            if args.bn_recal:
                recal, _ = evaluate(bn_recalibrated(r.model, ds.train_images), ds.test_images, ds.test_labels)
                extra["test_accuracy_bn_recal"] = float((recal.argmax(1) == ds.test_labels).mean())
            rec = {"name": v["name"], "seed": seed, "test_accuracy": float((probs.argmax(1) == ds.test_labels).mean()),
                   "val_acc": r.history[-1]["val_acc"], "best_val_acc": max(h["val_acc"] for h in r.history),
                   "train_seconds": round(r.train_seconds, 2), "warmup_seconds": round(r.warmup_seconds, 2),
                   "wall_seconds": round(time.perf_counter() - t0, 2), "epochs": len(r.history), "device": r.device, **extra}
            results.append(rec)
            print_jsonl(rec, out)
    print(f"\n{'variant':28s} {'seeds':>5s} {'test acc (median, min-max)':>28s} {'train s':>8s} {'ensemble of seeds':>18s}")
    for name in dict.fromkeys(r["name"] for r in results):
        rs = [r for r in results if r["name"] == name]
        accs = [r["test_accuracy"] * 100 for r in rs]
        ens = ""
        if len(rs) > 1:
            mean_probs = np.mean(probs_by_variant[name], axis=0)
            ens = f"{(mean_probs.argmax(1) == ds.test_labels).mean() * 100:17.2f}%"
        print(f"{name:28s} {len(rs):5d} {statistics.median(accs):10.2f}% ({min(accs):.2f}-{max(accs):.2f}) "
              f"{statistics.median(r['train_seconds'] for r in rs):8.1f} {ens}")
    return 0


def bn_recalibrated(model, images_uint8, batch_size=1000):
    """A copy of `model` whose BatchNorm running statistics are the exact averages over the clean images (the
    trained ones come from augmented batches)."""
    import copy

    import torch

    m = copy.deepcopy(model)
    dev = next(m.parameters()).device
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None                      # cumulative average instead of an exponential one
    m.train()
    with torch.no_grad():
        for start in range(0, len(images_uint8), batch_size):
            m(torch.from_numpy(images_uint8[start:start + batch_size]).unsqueeze(1).to(dev).float().div_(255.0))
    return m.eval()


if __name__ == "__main__":
    sys.exit(main())
