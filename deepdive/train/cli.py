"""Subcommands train, resume, runs and predict. Heavy imports (torch) happen inside the commands, not at registration."""
import argparse
import contextlib
import json
import sys
from pathlib import Path

from deepdive.errors import DeepdiveError, RunError
from deepdive.paths import DEFAULT_WORKSPACE

# Static copies of the choices so that building the parser does not import torch; train() validates again.
DATASETS = ("mnist", "fashion-mnist")
PRESETS = ("fast", "default", "best")
ARCHS = ("cnn", "cnn-small", "cnn-wide", "stack3", "stack5", "stack7")
PRECISIONS = {"auto": "auto", "bf16": True, "fp32": False}   # --precision -> the recipe's "amp"


def int_at_least(minimum):
    """argparse type: an integer >= minimum, with an error that says so."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)


def share(text):
    """argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value:g}")
    return value


def register(subparsers):
    p = subparsers.add_parser("train", help="train a model, evaluate it on the test split and record the run",
                              description="Train a CNN, evaluate it on the test split and record everything as a "
                                          "run in the workspace (database + run folder).")
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    p.add_argument("--preset", choices=PRESETS, default="default", help="training recipe (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, help="override the preset's number of epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--data-dir", help="folder with the four idx files (default: $DEEPDIVE_DATA_DIR, else the "
                                      "cache/download)")
    p.add_argument("--workspace", default=DEFAULT_WORKSPACE, help="where runs are stored (default: %(default)s)")
    p.add_argument("--name", help="run name (default: <dataset>-<preset>)")
    p.add_argument("--limit-train", type=positive_int, metavar="N",
                   help="train on a fixed random subset of N training images (never the validation images)")
    p.add_argument("--limit-test", type=positive_int, metavar="N", help="evaluate on the first N test images")
    p.add_argument("--ensemble", type=positive_int, default=1, metavar="K",
                   help="train K models (seeds S..S+K-1) and store them as one that averages their probabilities; "
                        "--preset best trains them as stack5 nets (30 epochs each), which average better than its cnns")
    p.add_argument("--arch", choices=ARCHS, help="train this net instead of the preset's (every member of an "
                                                 "ensemble): cnn (VGG-style, with pooling), cnn-small, cnn-wide, "
                                                 "stack3/5/7 (unpadded 3x3/5x5/7x7 convs, no pooling)")
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="auto",
                   help="bf16 autocast or fp32; auto (default): bf16 on CUDA, and on a CPU where a timed probe of "
                        "the model finds it faster (cached per machine in ~/.cache/deepdive/cpu_precision.json)")
    p.add_argument("--prune", type=share, metavar="R",
                   help="data pruning (InfoBatch): each pruned epoch leaves out this share of the images the model "
                        "already fits, reweighting the rest; 0 = every image every epoch. Default: the preset's "
                        "(fast on the CPU 0.5, else 0). On `default`, 0.5 trained 36%% faster for ~0.03 pp of test "
                        "accuracy (benchmarks/EXPERIMENTS.md)")
    p.add_argument("--reviewed-labels", action="store_true",
                   help="train with the workspace's reviews of this dataset's training images (Label issues of a "
                        "run's val or train split in deepdive serve): relabelled images with their new label, "
                        "ambiguous ones left out")
    p.add_argument("--json", action="store_true", help="print the result as JSON on the last stdout line")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("resume", help="continue an interrupted or failed training run and finish it",
                              description="Continue a `deepdive train` run that was interrupted (Ctrl-C, kill, a "
                                          "crash) or failed, after its last finished epoch, with the settings it "
                                          "started with; then evaluate and store it like any finished run. On the "
                                          "CPU the result equals what the run would have given without the stop.")
    p.add_argument("run", help="run id, unique id prefix, run name, or 'latest'")
    p.add_argument("--workspace", default=DEFAULT_WORKSPACE, help="where runs are stored (default: %(default)s)")
    p.add_argument("--data-dir", help="folder with the four idx files (default: $DEEPDIVE_DATA_DIR, else the "
                                      "cache/download)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on the last stdout line")
    p.set_defaults(func=cmd_resume)

    p = subparsers.add_parser("runs", help="list the runs in a workspace")
    p.add_argument("--workspace", default=DEFAULT_WORKSPACE)
    p.add_argument("--group-by", choices=("recipe", "name"),
                   help="one line per group of runs instead, with its test accuracy over them (mean, median, "
                        "range, standard deviation) and median training time: recipe puts the seeds of one "
                        "recipe together, as the dashboard's runs page does")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_runs)

    p = subparsers.add_parser("delete", help="delete runs: their records, analyses and folders",
                              description="Delete runs from a workspace: their rows in the store (epochs, "
                                          "predictions, analyses), the reviews of images only they hold (runs "
                                          "logged with log_evaluation) and their folders. Reviews of a dataset's "
                                          "images stay. Asks first unless --yes.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run id, unique id prefix, run name (its newest run) or "
                                                         "'latest'")
    p.add_argument("--workspace", default=DEFAULT_WORKSPACE)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask (needed where stdin is not a terminal)")
    p.set_defaults(func=cmd_delete)

    p = subparsers.add_parser("edit", help="rename a run or write its notes",
                              description="Rename a run and/or set its notes (shown on the dashboard's runs page "
                                          "and by `deepdive runs`); --notes '' clears them.")
    p.add_argument("run", help="run id, unique id prefix, run name (its newest run) or 'latest'")
    p.add_argument("--name", help="the new name")
    p.add_argument("--notes", help="what you want to remember about the run")
    p.add_argument("--workspace", default=DEFAULT_WORKSPACE)
    p.set_defaults(func=cmd_edit)

    p = subparsers.add_parser("predict", help="classify image files with a run's model",
                              description="Classify PNG/JPEG files of any size with a run's model, deepdive's own or "
                                          "one logged with log_evaluation. For an MNIST or Fashion-MNIST run each "
                                          "file is turned into an MNIST-style digit first (grayscale, dark "
                                          "background, fitted into 20x20 and centred in 28x28); for any other run "
                                          "the whole picture is resized to the model's input (its height, width and "
                                          "channels) and scaled as the run's stored inputs are, as the dashboard's "
                                          "Try view does.")
    p.add_argument("run", help="run id, unique id prefix, run name, or 'latest'")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--fit", choices=("digit", "whole"), default=None,
                   help="digit: fitted and centred like an MNIST digit (28x28 one-channel models only); whole: the "
                        "picture as it is, resized (default: digit for MNIST and Fashion-MNIST runs, whole "
                        "otherwise)")
    p.add_argument("--workspace", default=DEFAULT_WORKSPACE)
    p.add_argument("--json", action="store_true", help="print a JSON list, one entry per file")
    p.set_defaults(func=cmd_predict)


def cmd_train(args) -> int:
    from deepdive.train.run import train_and_evaluate

    # With --json, stdout carries only the result line: anything else printed while training goes to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    overrides = {"arch": args.arch} if args.arch else {}
    if args.precision != "auto":
        overrides["amp"] = PRECISIONS[args.precision]
    if args.prune is not None:
        overrides["prune"] = args.prune
    with quiet:
        result = train_and_evaluate(
            args.dataset, args.preset, workspace=args.workspace, name=args.name, epochs=args.epochs,
            seed=args.seed, device=args.device, data_dir=args.data_dir, limit_train=args.limit_train,
            limit_test=args.limit_test, ensemble=args.ensemble, progress=True,
            overrides=overrides or None, reviewed_labels=args.reviewed_labels)
    _print_result(result, args)
    return 0


def cmd_resume(args) -> int:
    from deepdive.train.run import resume_run

    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet:
        result = resume_run(args.run, workspace=args.workspace, data_dir=args.data_dir, progress=True)
    _print_result(result, args)
    return 0


def _print_result(result, args):
    if args.json:
        print(json.dumps(result))
        return
    epochs = f"{result['epochs']} epoch" + ("s" if result["epochs"] != 1 else "")
    print(f"run {result['run_id']} finished: test accuracy {result['test_accuracy']:.2%} after {epochs} "
          f"({result['train_seconds']:.0f} s of training)")
    print(f"run folder: {result['run_dir']}")
    print(f"all runs:   deepdive runs --workspace {args.workspace}")


def cmd_runs(args) -> int:
    from deepdive.store import DB_NAME, Store

    if not (Path(args.workspace) / DB_NAME).is_file():
        runs = []
    else:
        with Store.open(args.workspace, create=False) as store:
            runs = store.list_runs()
    if args.group_by:
        return _print_groups(runs, args)
    rows = [{"id": r.id, "name": r.name, "dataset": r.dataset, "recipe": r.recipe, "status": r.status,
             "test_accuracy": r.test_accuracy, "created": r.created_at, "notes": r.notes} for r in runs]
    table = [("ID", "NAME", "DATASET", "RECIPE", "STATUS", "TEST ACC", "CREATED (UTC)", "NOTES")]
    for run, r in zip(runs, rows):
        acc = "-" if r["test_accuracy"] is None else f"{r['test_accuracy']:.2%}"
        note = " ".join((r["notes"] or "").split())      # one line, the start of it
        table.append((r["id"], r["name"], r["dataset"], run.recipe_text or "-", r["status"], acc,
                      r["created"][:19].replace("T", " "), note if len(note) <= 40 else note[:39] + "…"))
    return _print_listing(args, rows, table)


def _print_listing(args, records, table) -> int:
    """`deepdive runs`' output: the records as one JSON line with --json, else the table (its header first) with
    aligned columns, or a word on how to start when there is nothing to list."""
    if args.json:
        print(json.dumps(records))
        return 0
    if len(table) == 1:
        print(f"no runs in {args.workspace} yet; train one with: deepdive train --workspace {args.workspace}")
        return 0
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def run_groups(runs, by: str) -> list[dict]:
    """The runs in groups (by recipe_group or name, newest group first as the runs come): each group's runs, and
    its test accuracy over those that have one (n, mean, median, min, max, sample standard deviation) and median
    training time."""
    import statistics

    groups = {}
    for r in runs:
        groups.setdefault(r.recipe_group if by == "recipe" else r.name, []).append(r)
    out = []
    for key, members in groups.items():
        acc = [r.test_accuracy for r in members if r.test_accuracy is not None]
        secs = [r.train_seconds for r in members if r.train_seconds is not None]
        out.append({"group": key, "runs": [r.id for r in members], "n_accuracy": len(acc),
                    "mean": statistics.fmean(acc) if acc else None, "median": statistics.median(acc) if acc else None,
                    "min": min(acc, default=None), "max": max(acc, default=None),
                    "std": statistics.stdev(acc) if len(acc) > 1 else None,
                    "median_train_seconds": statistics.median(secs) if secs else None})
    return out


def _print_groups(runs, args) -> int:
    groups = run_groups(runs, args.group_by)
    pct = (lambda v: "-" if v is None else f"{v:.2%}")
    table = [("GROUP", "RUNS", "WITH ACC", "MEAN", "MEDIAN", "MIN-MAX", "STD", "TRAIN S (MEDIAN)")]
    for g in groups:
        table.append((g["group"], str(len(g["runs"])), str(g["n_accuracy"]), pct(g["mean"]), pct(g["median"]),
                      "-" if g["min"] is None else f"{g['min']:.2%}-{g['max']:.2%}",
                      "-" if g["std"] is None else f"{g['std'] * 100:.3f} pp",
                      "-" if g["median_train_seconds"] is None else f"{g['median_train_seconds']:.1f}"))
    return _print_listing(args, groups, table)


def cmd_delete(args) -> int:
    from deepdive.store import Store, folder_bytes, refuse_running

    with Store.open(args.workspace, create=False) as store:
        runs = {}
        for ref in args.runs:              # every reference resolved (and checked) before anything is deleted
            run = store.get_run(ref)
            refuse_running(run)
            runs[run.id] = run
        sizes = {i: folder_bytes(r.run_dir) for i, r in runs.items()}
        for i, r in runs.items():
            acc = "-" if r.test_accuracy is None else f"{r.test_accuracy:.2%}"
            print(f"  {i}  {r.name}  {r.dataset}  {r.status}  {acc}  {sizes[i] / 1e6:.1f} MB")
        what = f"{len(runs)} run{'s' if len(runs) != 1 else ''} ({sum(sizes.values()) / 1e6:.1f} MB)"
        if not args.yes:
            if not sys.stdin.isatty():
                raise RunError(f"deleting {what} needs --yes where stdin is not a terminal")
            if input(f"delete {what} from {store.workspace}? [y/N] ").strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
        freed = sum(store.delete_run(i) for i in runs)
    print(f"deleted {len(runs)} run{'s' if len(runs) != 1 else ''}, {freed / 1e6:.1f} MB freed")
    return 0


def cmd_edit(args) -> int:
    from deepdive.store import Store

    if args.name is None and args.notes is None:
        raise DeepdiveError("nothing to change: give --name NAME and/or --notes TEXT")
    with Store.open(args.workspace, create=False) as store:
        run = store.edit_run(store.get_run(args.run).id, name=args.name, notes=args.notes)
    print(f"run {run.id}: name {run.name!r}" + (f", notes {run.notes!r}" if run.notes else ", no notes"))
    return 0


def cmd_predict(args) -> int:
    import numpy as np

    from deepdive.analysis import inputs_from_display, predict
    from deepdive.analysis.probe import input_field
    from deepdive.analysis.results import pictures_as_inputs
    from deepdive.data.images import fit_picture, open_image, prepare_digit
    from deepdive.models import load_checkpoint
    from deepdive.store import Store

    with Store.open(args.workspace, create=False) as store:
        run = store.get_run(args.run)
    checkpoint = run.run_dir / "model_best.pt"
    if not checkpoint.is_file():
        raise RunError(f"run {run.id} ({run.status}) has no model checkpoint {checkpoint}; train a new run")
    field = input_field(run.run_dir)
    if field is None and run.dataset not in DATASETS:
        raise RunError(f"run {run.id} was trained on {run.dataset!r} and stores no evaluation inputs, so the size "
                       "and scale its model takes are unknown")
    shape, scale = field or ((1, 28, 28), (np.zeros(1, np.float32), np.ones(1, np.float32)))   # 28x28 grey, 0..1
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise RunError(f"run {run.id}'s model takes inputs of shape {shape}: only 1- or 3-channel images can be "
                       "classified")
    fit = args.fit or ("digit" if run.dataset in DATASETS else "whole")
    if fit == "digit" and shape != (1, 28, 28):
        raise RunError(f"--fit digit prepares 28x28 one-channel digits; run {run.id}'s model takes {shape}")
    model = load_checkpoint(checkpoint)
    class_names = run.class_names

    results, failed = [], False
    for path in args.images:
        try:
            image = open_image(path)
            picture = prepare_digit(image, name=str(path)) if fit == "digit" else \
                fit_picture(image, shape[1:], shape[0])
        except DeepdiveError as e:
            failed = True
            message = str(e) if path in str(e) else f"{path}: {e}"
            results.append({"file": path, "error": message})
            print(f"error: {message}", file=sys.stderr)
            continue
        x = inputs_from_display(pictures_as_inputs(picture[None]), scale)
        probs = predict(model, x, np.zeros(1, np.int64), len(class_names))[0][0]
        label = int(probs.argmax())
        results.append({"file": path, "class": class_names[label], "label": label,
                        "probabilities": [round(float(p), 6) for p in probs]})
        if not args.json:
            spread = "  ".join(f"{name}:{p:.3f}" for name, p in zip(class_names, probs))
            print(f"{path}: {class_names[label]} ({probs[label]:.1%})\n  {spread}")
    if args.json:
        print(json.dumps(results))
    return 1 if failed else 0
