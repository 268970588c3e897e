"""Accuracy sweep over recipe variants: train each (variant, seed), report test accuracy and time.

    PYTHONPATH=. python benchmarks/sweep.py VARIANTS.json [--device cuda] [--out results.jsonl]
    PYTHONPATH=. python benchmarks/sweep.py '[{"name": "fast-lr.2", "preset": "fast", "overrides": {"lr": 0.2}}]'

A variant is {"name", "preset", "overrides", "epochs", "seeds" (default [0]), "ensemble", "limit_train", "teacher"};
all but name and preset are optional. "teacher" distills (the recipe's "distill" option, which overrides must set):
a checkpoint path, a list of them (their probabilities averaged, as one ensemble), or a spec {"preset", "overrides",
"epochs", "seed", "ensemble", "limit_train"} trained once per process and shared by every variant naming the same
spec; its test accuracy is recorded beside each student's.
Prints one JSON line per run and a table (median over seeds) last; for a variant with several seeds the table
also gives the accuracy of their probability-averaged ensemble (what `--ensemble K` would store as one model).
This is how the presets in deepdive/train/recipe.py were chosen (benchmarks/EXPERIMENTS.md); it imports only what
the training path does, so it runs on the bare GPU machine too (benchmarks/gpu_bench.sh).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
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
    p.add_argument("--last", action="store_true",
                   help="also report the test accuracy of the last epoch's model (the kept one follows the "
                        "recipe's \"keep\" rule)")
    p.add_argument("--tta", action="store_true",
                   help="also report test accuracy with test-time augmentation: the mean probability over the "
                        "image and its four one-pixel shifts (a measurement only; the product does not do this)")
    p.add_argument("--per-epoch", action="store_true",
                   help="also record every epoch's test accuracy of that epoch's model (with --last's checkpoints), "
                        "to compare checkpoint-selection rules offline against the history's val numbers")
    p.add_argument("--swa", default=None, metavar="K,K,...",
                   help="also report the test accuracy of the average of the last K epochs' weights, for each K "
                        "(BatchNorm statistics averaged too, and re-estimated on the clean training images): "
                        "stochastic weight averaging over the tail of the same run, so paired with the kept model")
    p.add_argument("--keep-models", default=None, metavar="DIR",
                   help="save every run's kept checkpoint as DIR/<variant>_s<seed>.pt (and trained teachers as "
                        "DIR/teacher_<n>.pt), e.g. to distill from them in a later sweep")
    p.add_argument("--probs-out", default=None,
                   help="keep every run's test probabilities (float32, compressed) in this .npz, rewritten after "
                        "each run, so ensembles across variants can be scored afterwards (benchmarks/ensembles.py)")
    args = p.parse_args(argv)
    args.last = args.last or args.per_epoch
    swa_ks = sorted({int(k) for k in args.swa.split(",")}) if args.swa else []
    if any(k < 1 for k in swa_ks):
        p.error(f"--swa takes epoch counts of at least 1, got {args.swa}")

    import numpy as np

    from deepdive.atomic import atomic_open
    from deepdive.data import load_dataset
    from deepdive.models import Ensemble, load_checkpoint, save_checkpoint
    from deepdive.train.bench import print_jsonl
    from deepdive.train.recipe import evaluate, train

    text = open(args.variants).read() if os.path.exists(args.variants) else args.variants
    variants = json.loads(text)
    if swa_ks and any(v.get("ensemble", 1) > 1 for v in variants):
        p.error("--swa averages one model's epochs; it does not apply to ensemble variants")
    ds = load_dataset(args.dataset, data_dir=args.data_dir, progress=False)
    results, probs_by_variant, saved_probs = [], {}, {}
    out = open(args.out, "a") if args.out else None

    def test_accuracy(probs):
        return float((probs.argmax(1) == ds.test_labels).mean())

    def test_probs(model_or_path):
        model = load_checkpoint(model_or_path) if isinstance(model_or_path, str) else model_or_path
        return evaluate(model, ds.test_images, ds.test_labels)[0]

    if args.keep_models:
        os.makedirs(args.keep_models, exist_ok=True)
    teachers = {}   # json of a teacher spec -> (model, its test accuracy)

    def teacher_for(spec):
        """(model, test accuracy) of a variant's "teacher": None, a checkpoint path, a list of them (one
        ensemble, e.g. runs kept by --keep-models), or a spec trained once."""
        if spec is None:
            return None, None
        key = json.dumps(spec, sort_keys=True)
        if key not in teachers:
            if isinstance(spec, str):
                model = load_checkpoint(spec)
            elif isinstance(spec, list):
                model = Ensemble([load_checkpoint(path) for path in spec])
            else:
                t = train(ds, spec["preset"], epochs=spec.get("epochs"), seed=spec.get("seed", 0),
                          device=args.device, overrides=spec.get("overrides"), ensemble=spec.get("ensemble", 1),
                          limit_train=spec.get("limit_train"), progress=False)
                model = t.model
                if args.keep_models:
                    save_checkpoint(os.path.join(args.keep_models, f"teacher_{len(teachers)}.pt"), t.checkpoint)
            teachers[key] = (model, test_accuracy(test_probs(model)))
        return teachers[key]

    for v in variants:
        for seed in v.get("seeds", [0]):
            teacher, teacher_accuracy = teacher_for(v.get("teacher"))
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="sweep-") as ckpt_dir:
                last_path = os.path.join(ckpt_dir, "model_last.pt")
                per_epoch, snapshots = [], []

                def keep_snapshot(model, row, snapshots=snapshots):   # the kept model after each epoch
                    snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
                    del snapshots[:-max(swa_ks)]

                def on_epoch(row, last_path=last_path, per_epoch=per_epoch):
                    if args.per_epoch:
                        per_epoch.append({"epoch": row["epoch"], "val_acc": row["val_acc"],
                                          "val_loss": row["val_loss"],
                                          "test_accuracy": test_accuracy(test_probs(last_path))})

                r = train(ds, v["preset"], epochs=v.get("epochs"), seed=seed, device=args.device,
                          overrides=v.get("overrides"), ensemble=v.get("ensemble", 1), progress=False,
                          checkpoint_dir=ckpt_dir if args.last else None, on_epoch=on_epoch,
                          limit_train=v.get("limit_train"), eval_hook=keep_snapshot if swa_ks else None,
                          teacher=teacher)
                extra = {}
                if per_epoch:   # its final entry is the last epoch's model: no need to evaluate that twice
                    extra["test_accuracy_last"] = per_epoch[-1]["test_accuracy"]
                    extra["per_epoch"] = per_epoch
                elif args.last:
                    extra["test_accuracy_last"] = test_accuracy(test_probs(last_path))
            if args.keep_models:
                save_checkpoint(os.path.join(args.keep_models, f"{v['name']}_s{seed}.pt"), r.checkpoint)
            if teacher is not None:
                extra["teacher_test_accuracy"] = teacher_accuracy
            probs = test_probs(r.model)
            probs_by_variant.setdefault(v["name"], []).append(probs)
            if args.probs_out:
                saved_probs[f"{v['name']}/{seed}"] = probs      # evaluate() returns float32
                with atomic_open(args.probs_out) as f:   # whole or not at all, should a timeout cut the sweep
                    np.savez_compressed(f, labels=np.asarray(ds.test_labels), **saved_probs)
            if args.bn_recal:
                extra["test_accuracy_bn_recal"] = test_accuracy(test_probs(bn_recalibrated(r.model, ds.train_images)))
            for k in swa_ks:
                if k > len(snapshots):
                    continue
                avg = averaged_model(r.model, snapshots[-k:])
                extra[f"test_accuracy_swa{k}"] = test_accuracy(test_probs(avg))
                extra[f"test_accuracy_swa{k}_bn_recal"] = test_accuracy(
                    test_probs(bn_recalibrated(avg, ds.train_images)))
            if args.tta:
                extra["test_accuracy_tta"] = test_accuracy(shift_tta(r.model, ds.test_images))
            rec = {"name": v["name"], "seed": seed, "test_accuracy": test_accuracy(probs),
                   "val_acc": r.history[-1]["val_acc"], "best_val_acc": max(h["val_acc"] for h in r.history),
                   "train_seconds": round(r.train_seconds, 2), "warmup_seconds": round(r.warmup_seconds, 2),
                   "wall_seconds": round(time.perf_counter() - t0, 2), "epochs": len(r.history), "device": r.device,
                   "cuda_graphs": r.config.get("cuda_graphs"),
                   "compile": r.config.get("compile"),
                   "epoch_seconds": [round(h["seconds"], 2) for h in r.history], **extra}
            if "train_images" in r.history[0]:      # a pruned run: how many images each epoch trained on
                rec["train_images"] = [h["train_images"] for h in r.history]
            results.append(rec)
            print_jsonl(rec, out)
    print(f"\n{'variant':28s} {'seeds':>5s} {'test acc (median, min-max)':>28s} {'train s':>8s} {'ensemble of seeds':>18s}")
    for name in dict.fromkeys(r["name"] for r in results):
        rs = [r for r in results if r["name"] == name]
        accs = [r["test_accuracy"] * 100 for r in rs]
        ens = ""
        if len(rs) > 1:
            mean_probs = np.mean(probs_by_variant[name], axis=0)
            ens = f"{test_accuracy(mean_probs) * 100:17.2f}%"
        print(f"{name:28s} {len(rs):5d} {statistics.median(accs):10.2f}% ({min(accs):.2f}-{max(accs):.2f}) "
              f"{statistics.median(r['train_seconds'] for r in rs):8.1f} {ens}")
    return 0


def averaged_model(model, state_dicts):
    """A copy of `model` holding the mean of `state_dicts` (floating-point entries: weights and BatchNorm running
    statistics; integer ones, BatchNorm's batch counters, from the last)."""
    import copy

    import torch

    avg = {k: (torch.stack([sd[k].float() for sd in state_dicts]).mean(0).to(v.dtype)
               if v.is_floating_point() else v) for k, v in state_dicts[-1].items()}
    m = copy.deepcopy(model)
    m.load_state_dict(avg)
    return m.eval()


def bn_recalibrated(model, images_uint8, batch_size=1000):
    """A copy of `model` whose BatchNorm running statistics are the exact averages over the clean images (the
    trained ones come from augmented batches)."""
    import copy

    import torch
    from torch.optim.swa_utils import update_bn

    m = copy.deepcopy(model)
    dev = next(m.parameters()).device
    x = torch.from_numpy(images_uint8).unsqueeze(1)
    update_bn((x[i:i + batch_size].to(dev).float().div_(255.0) for i in range(0, len(x), batch_size)), m)
    return m.eval()


def shift_tta(model, images_uint8, batch_size=1000):
    """Mean softmax over each image and its four one-pixel shifts."""
    import torch

    from deepdive.train import augment

    dev = next(model.parameters()).device
    x_all = torch.from_numpy(images_uint8).unsqueeze(1)
    out = []
    with torch.no_grad():
        for i in range(0, len(x_all), batch_size):
            x = x_all[i:i + batch_size].to(dev).float().div_(255.0)
            views = [x] + [augment.shift(x, dx, dy) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
            out.append(torch.stack([model.eval()(v).float().softmax(1) for v in views]).mean(0).cpu())
    return torch.cat(out).numpy()


if __name__ == "__main__":
    sys.exit(main())
