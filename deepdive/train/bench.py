"""`deepdive bench`: time the presets against the PyTorch examples/mnist recipe, in one process, on one data set.

    deepdive bench [--device cpu|cuda] [--presets fast,default,best] [--seeds N] [--ensemble K]
                   [--peer-epochs N] [--limit-train N] [--limit-test N] [--epochs N] [--overrides JSON]
                   [--dataset mnist] [--data-dir DIR] [--json-out FILE] [--no-progress]

For every (recipe, seed, epoch) it prints one JSON line
    {"recipe", "seed", "epoch", "train_seconds" (cumulative, training only), "test_accuracy", "device"}
(test accuracy is measured after each epoch, outside the timed region), then a table: time to 99.0 / 99.4 /
99.5 / 99.7 % test accuracy (median over seeds), final accuracy, warm-up seconds (the longest over seeds: a
process's first run pays for cuDNN autotuning and compilation), and the speed-up over the reference (its
training time over the time the recipe needs to reach the reference's final accuracy).

The training path imports only torch/numpy/tqdm/stdlib, so `PYTHONPATH=. python -m deepdive.train.bench`
runs on a bare GPU machine (benchmarks/gpu_bench.sh).
"""
import argparse
import json
import os
import statistics
import sys
import time

THRESHOLDS = (0.990, 0.994, 0.995, 0.997)


def register(subparsers):
    p = subparsers.add_parser("bench", help="time the training presets against the PyTorch examples/mnist recipe",
                              description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def add_arguments(p):
    from deepdive.train.cli import int_at_least, positive_int  # stdlib-only module: fine on the bare GPU machine

    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--presets", default="fast,default,best",
                   help="comma-separated presets to time (default: fast,default,best); empty for none")
    p.add_argument("--seeds", type=positive_int, default=1, help="seeds per preset: 0, 1, ... N-1 (default 1)")
    p.add_argument("--ensemble", type=int_at_least(0), default=0,
                   help="also train one K-model ensemble of --ensemble-preset (seed 0); 0 = none (default)")
    p.add_argument("--ensemble-preset", default="best", help="preset of the ensemble's members (default best)")
    p.add_argument("--peer-epochs", type=int_at_least(0), default=14,
                   help="epochs of the examples/mnist reference (default 14, as the example); 0 skips it")
    p.add_argument("--limit-train", type=positive_int, default=None, help="train on this many images only (smoke tests)")
    p.add_argument("--limit-test", type=positive_int, default=None, help="evaluate on the first N test images only (smoke tests)")
    p.add_argument("--epochs", type=positive_int, default=None, help="override every preset's epoch count")
    p.add_argument("--overrides", default=None, metavar="JSON",
                   help='recipe overrides for every preset, e.g. \'{"batch_size": 1024, "compile": true}\'')
    p.add_argument("--dataset", default="mnist", help="mnist (default) or fashion-mnist")
    p.add_argument("--data-dir", default=os.environ.get("DEEPDIVE_DATA_DIR"),
                   help="folder with the raw idx files (default: $DEEPDIVE_DATA_DIR, else the usual sources)")
    p.add_argument("--json-out", default=None, help="also append the JSON lines to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    import numpy as np

    from deepdive.data import load_dataset
    from deepdive.errors import DeepdiveError
    from deepdive.train.recipe import PRESETS, evaluate, member_configs, resolve_config, resolve_device, train

    presets = [p for p in (args.presets or "").split(",") if p]
    unknown = [p for p in presets + ([args.ensemble_preset] if args.ensemble else []) if p not in PRESETS]
    if unknown:
        raise DeepdiveError(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    if args.seeds < 1:
        raise DeepdiveError("--seeds must be >= 1")
    try:
        overrides = json.loads(args.overrides) if args.overrides else None
    except json.JSONDecodeError as e:
        raise DeepdiveError(f"--overrides is not valid JSON: {e}") from e
    if overrides is not None and not isinstance(overrides, dict):
        raise DeepdiveError(f"--overrides must be a JSON object, got {type(overrides).__name__}")
    dev = resolve_device(args.device)
    # a bad option fails here, before any data loads (for the ensemble, in every member's config)
    for p in presets:
        resolve_config(p, overrides, args.epochs, device=dev)
    member_configs(args.ensemble_preset, overrides, args.epochs, dev, args.ensemble)   # as train() resolves them
    dataset = load_dataset(args.dataset, data_dir=args.data_dir, progress=not args.no_progress)
    test_x, test_y = dataset.test_images, np.asarray(dataset.test_labels)
    if args.limit_test is not None:
        test_x, test_y = test_x[: args.limit_test], test_y[: args.limit_test]
    try:
        out = open(args.json_out, "a") if args.json_out else None
    except OSError as e:
        raise DeepdiveError(f"cannot open --json-out {args.json_out}: {e.strerror or e}") from None
    records, summaries = [], []

    def emit(recipe, seed, epoch, train_seconds, test_accuracy):
        rec = {"recipe": recipe, "seed": seed, "epoch": epoch, "train_seconds": round(train_seconds, 3),
               "test_accuracy": round(float(test_accuracy), 5), "device": str(dev)}
        records.append(rec)
        print_jsonl(rec, out)

    def test_accuracy(model):
        probs, _ = evaluate(model, test_x, test_y, device=dev)
        return float((probs.argmax(1) == test_y).mean())

    progress = not args.no_progress
    try:
        if args.peer_epochs > 0:
            summaries.append(_bench_reference(dataset, args, dev, emit, test_accuracy, progress))
            _emit_summary(summaries[-1], dev, out)
        jobs = [(p, p, s, 1) for p in presets for s in range(args.seeds)]
        if args.ensemble:
            jobs.append((f"{args.ensemble_preset}-ensemble{args.ensemble}", args.ensemble_preset, 0, args.ensemble))
        for recipe, preset, seed, k in jobs:
            state = {}

            def hook(model, row, recipe=recipe, seed=seed, state=state):
                state["t"] = state.get("t", 0.0) + row["seconds"]
                emit(recipe, seed, row["epoch"], state["t"], test_accuracy(model))

            t0 = time.perf_counter()
            result = train(dataset, preset, epochs=args.epochs, seed=seed, device=dev, overrides=overrides,
                           limit_train=args.limit_train, ensemble=k, progress=progress, eval_hook=hook)
            t_total = time.perf_counter() - t0
            final = test_accuracy(result.model)
            summaries.append({"recipe": recipe, "seed": seed, "final": final, "train_seconds": result.train_seconds,
                              "warmup_seconds": result.warmup_seconds, "wall_seconds": t_total,
                              "cuda_graphs": result.config["cuda_graphs"], "compile": result.config["compile"],
                              "bf16": result.config["amp"]})
            _emit_summary(summaries[-1], dev, out)
    finally:
        if out:
            out.close()
    print()
    print(format_table(records, summaries, device=str(dev)))
    return 0


def _bench_reference(dataset, args, dev, emit, test_accuracy, progress):
    import numpy as np

    from deepdive.train.recipe import PRESETS, train_val_indices
    from deepdive.train.reference import train_reference

    # The same training split (and --limit-train subset) the presets train on.
    train_idx, _ = train_val_indices(dataset.train_labels, PRESETS["default"]["val_size"], args.limit_train)

    def hook(model, row):
        emit("reference", 0, row["epoch"], row["train_seconds"], test_accuracy(model))

    t0 = time.perf_counter()
    model, rows = train_reference(dataset.train_images[train_idx], np.asarray(dataset.train_labels)[train_idx],
                                  epochs=args.peer_epochs, seed=0, device=dev, eval_hook=hook, progress=progress)
    summary = {"recipe": "reference", "seed": 0, "final": test_accuracy(model), "train_seconds": rows[-1]["train_seconds"],
               "warmup_seconds": 0.0, "wall_seconds": time.perf_counter() - t0, "bf16": False}
    return summary


def print_jsonl(record, out=None):
    """Print one JSON line (and append it to the open file `out`, when given)."""
    line = json.dumps(record)
    print(line, flush=True)
    if out:
        out.write(line + "\n")
        out.flush()


def _emit_summary(summary, dev, out):
    print_jsonl({"summary": {k: round(v, 5) if isinstance(v, float) else v for k, v in summary.items()}
                 | {"device": str(dev)}}, out)


def read_jsonl(path):
    """(records, summaries) from a --json-out file, for format_table (benchmarks/bench_table.py)."""
    records, summaries = [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            obj = json.loads(line)
            if "summary" in obj:
                summaries.append(obj["summary"])
            else:
                records.append(obj)
    return records, summaries


def time_to(rows, threshold):
    """Cumulative train seconds at the first epoch whose test accuracy reaches threshold, else None."""
    for r in sorted(rows, key=lambda r: r["epoch"]):
        if r["test_accuracy"] >= threshold - 1e-9:
            return r["train_seconds"]
    return None


def format_table(records, summaries, device=""):
    """The bench's closing table: one line per recipe, medians over seeds."""
    by_recipe = {}
    for r in records:
        by_recipe.setdefault(r["recipe"], {}).setdefault(r["seed"], []).append(r)
    sums = {}
    for s in summaries:
        sums.setdefault(s["recipe"], []).append(s)
    ref = sums.get("reference", [None])[0]

    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def fmt_t(v):
        return "-" if v is None else f"{v:.1f}s" if v >= 10 else f"{v:.2f}s"

    head = ["recipe", "seeds", "precision"] + [f"t→{t * 100:.1f}%" for t in THRESHOLDS] + ["final acc (min-max)", "train s",
                                                                            "warm-up s (max)", "vs ref"]
    lines = []
    for recipe, seeds in by_recipe.items():
        runs = list(seeds.values())
        finals = [s["final"] for s in sums.get(recipe, [])] or [rows[-1]["test_accuracy"] for rows in runs]
        train_s = med([s["train_seconds"] for s in sums.get(recipe, [])] or [rows[-1]["train_seconds"] for rows in runs])
        # The longest warm-up, not the median: a process's first run pays for autotuning and compiling, the
        # later ones hit the caches, and the first is what a user starting `deepdive train` waits for.
        warm = max([s["warmup_seconds"] for s in sums.get(recipe, [])], default=None)
        # bf16 or fp32 as the runs chose it (amp "auto" depends on the machine); "-" where no summary says
        # (JSON lines written before the summaries recorded it)
        chosen = sorted({"bf16" if s["bf16"] else "fp32" for s in sums.get(recipe, []) if s.get("bf16") is not None})
        chosen = chosen or ["-"]
        cells = [recipe, str(len(runs)), "/".join(chosen)]
        # Seeds that never reach a threshold count as missing: "-" unless at least half of them got there.
        for t in THRESHOLDS:
            times = [time_to(rows, t) for rows in runs]
            reached = [x for x in times if x is not None]
            cells.append(fmt_t(med(reached)) if len(reached) * 2 >= len(runs) else "-")
        acc = f"{med(finals) * 100:.2f}%"
        if len(finals) > 1:
            acc += f" ({min(finals) * 100:.2f}-{max(finals) * 100:.2f})"
        cells += [acc, fmt_t(train_s), fmt_t(warm)]
        if ref is None or recipe == "reference":
            cells.append("1.0x" if recipe == "reference" else "-")
        else:
            # Speed-up: the reference's whole training time over the time this recipe needs to reach the
            # reference's final accuracy (median over seeds).
            t = med([time_to(rows, ref["final"]) for rows in runs])
            cells.append(f"{ref['train_seconds'] / t:.1f}x" if t else "-")
        lines.append(cells)
    widths = [max(len(str(row[i])) for row in [head] + lines) for i in range(len(head))]
    fmt = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths))  # noqa: E731
    title = f"deepdive bench on {device}: test accuracy after each epoch; times are training seconds, median over seeds"
    return "\n".join([title, fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in lines])


def main(argv=None) -> int:
    """`python -m deepdive.train.bench ...`: the bench without the rest of the CLI (for the bare GPU machine)."""
    from deepdive.errors import DeepdiveError

    parser = argparse.ArgumentParser(prog="deepdive bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except DeepdiveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
