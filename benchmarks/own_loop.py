"""Training dynamics from a training loop of your own: what `run.log_train_batch` (and `run.log_step`) cost and
what they find.

    PYTHONPATH=. python benchmarks/own_loop.py [--epochs 4] [--flip 0.01] [--logged-first] [--workspace W]
                                               [--json-out F]

The loop is the PyTorch examples/mnist one (deepdive.train.reference's network, Adadelta lr 1.0, StepLR 0.7,
batch 64, a shuffled DataLoader) on all 60,000 MNIST training images, a share of them (--flip) under a wrong label
on purpose. It trains twice from the same seed, epoch by epoch in turn: without logging, and with
`run.log_train_batch` and `run.log_step(loss=loss.detach())` on every batch; prints both epochs' times, whether
the two models are bit for bit equal (logging must not change the training) and whether the losses per step
average to each epoch's, then logs the evaluation on the 10,000 test images with train_data and says how many of
the flipped labels the run's area under the margin puts below zero and among its lowest.
"""
import argparse
import json
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import deepdive
from deepdive.data import load_dataset
from deepdive.store import Store
from deepdive.train.reference import REFERENCE, ReferenceNet


def trainer(x, y, seed, run=None):
    """One epoch at a time of the examples/mnist loop, as a function of the epoch number; with `run`, each
    batch's answers go to run.log_train_batch and its loss (a 0-d tensor) to run.log_step. Each trainer keeps its
    own random state (dropout, shuffling), so two of them run epoch by epoch in turn train as each would alone: the
    host's drift hits both alike."""
    torch.manual_seed(seed)
    model = ReferenceNet()
    opt = torch.optim.Adadelta(model.parameters(), lr=REFERENCE["lr"])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=REFERENCE["gamma"])
    loader = DataLoader(deepdive.indexed(TensorDataset(x, y)), batch_size=REFERENCE["batch_size"], shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    rng = [torch.get_rng_state()]

    def epoch(e) -> float:
        torch.set_rng_state(rng[0])
        model.train()
        t0 = time.perf_counter()
        total = 0.0
        for xb, yb, ib in loader:
            out = model(xb)
            if run is not None:
                run.log_train_batch(ib, out, yb)
            loss = F.nll_loss(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if run is not None:
                run.log_step(loss=loss.detach())
            total += loss.item() * len(yb)
        sched.step()
        seconds = time.perf_counter() - t0
        rng[0] = torch.get_rng_state()
        if run is not None:
            run.log(epoch=e, train_loss=total / len(y), seconds=seconds)
        print(f"  epoch {e} {'logged' if run is not None else 'plain '}: {seconds:.1f} s, train loss "
              f"{total / len(y):.4f}", flush=True)
        return seconds

    return model, epoch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--flip", type=float, default=0.01, help="share of training labels flipped on purpose")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workspace", default=None, help="where the logged run goes (default: a temporary folder)")
    p.add_argument("--json-out", default=None)
    p.add_argument("--logged-first", action="store_true", help="each epoch: the logged loop first, then the plain")
    args = p.parse_args(argv)

    mnist = load_dataset("mnist")
    x = torch.from_numpy(mnist.train_images).float().div(255).unsqueeze(1)
    y = torch.from_numpy(mnist.train_labels.astype(np.int64)).clone()
    rng = np.random.default_rng(args.seed)
    flipped = np.sort(rng.choice(len(y), int(round(args.flip * len(y))), replace=False))
    y[flipped] = (y[flipped] + torch.from_numpy(rng.integers(1, 10, len(flipped)))) % 10

    workspace = args.workspace or tempfile.mkdtemp(prefix="own_loop_")
    run = deepdive.init(name="own-loop", workspace=workspace, config={"recipe": "examples/mnist",
                                                                      "flipped": len(flipped)})
    order = "logged, then plain" if args.logged_first else "plain, then logged (run.log_train_batch, run.log_step)"
    print(f"examples/mnist loop, {args.epochs} epochs, {len(flipped)} of {len(y):,} labels flipped; each epoch "
          f"{order}", flush=True)
    plain, plain_epoch = trainer(x, y, args.seed)
    logged, logged_epoch = trainer(x, y, args.seed, run)
    plain_s, logged_s = [], []
    for e in range(1, args.epochs + 1):
        if args.logged_first:
            logged_s.append(logged_epoch(e))
        plain_s.append(plain_epoch(e))
        if not args.logged_first:
            logged_s.append(logged_epoch(e))
    plain.eval(), logged.eval()
    same = all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), logged.state_dict().values()))

    test = (torch.from_numpy(mnist.test_images).float().div(255).unsqueeze(1),
            torch.from_numpy(mnist.test_labels.astype(np.int64)))
    t0 = time.perf_counter()
    summary = run.log_evaluation(logged, test, class_names=mnist.class_names, train_data=(x, y))
    log_s = time.perf_counter() - t0
    run.finish()

    from deepdive.analysis import dynamics
    from deepdive.analysis.results import AnalysisResult

    table = AnalysisResult.load(run.run_dir, "test").dynamics()
    wrong = set(flipped.tolist())
    negative = set(table.loc[table["aum"] < 0, "idx"].tolist())
    # the loss per step as logged: one point per batch, their weighted mean per epoch the epoch's train loss
    with Store.open(workspace, create=False) as store:
        steps, epochs = store.steps(run.id)["loss"], store.epochs(run.id)
    batch = REFERENCE["batch_size"]
    per_epoch = -(-len(y) // batch)
    sizes = [batch] * (per_epoch - 1) + [len(y) - batch * (per_epoch - 1)]     # the last batch is the rest
    values = np.asarray(steps["value"], dtype=np.float64)
    steps_ok = len(values) == per_epoch * args.epochs and np.allclose(
        [np.average(v, weights=sizes) for v in values.reshape(args.epochs, per_epoch)],
        [e["train_loss"] for e in epochs], rtol=1e-5)
    lowest = set(dynamics.flagged(table, len(flipped))["idx"].tolist())
    result = {"epochs": args.epochs, "flipped": len(flipped), "images": len(y),
              "plain_epoch_s": plain_s, "logged_epoch_s": logged_s, "bit_identical": same,
              "test_accuracy": summary["accuracy"], "log_evaluation_s": log_s,
              "negative_aum": len(negative), "flipped_negative": len(negative & wrong),
              "flipped_in_lowest": len(lowest & wrong), "step_points": len(steps["step"]),
              "steps_match_epochs": bool(steps_ok), "run": run.id, "workspace": str(workspace)}
    overhead = (sum(logged_s) / sum(plain_s) - 1) * 100
    print(f"\nepoch seconds, plain:  {' '.join(f'{s:.1f}' for s in plain_s)}  (sum {sum(plain_s):.1f})")
    print(f"epoch seconds, logged: {' '.join(f'{s:.1f}' for s in logged_s)}  (sum {sum(logged_s):.1f}, "
          f"{overhead:+.1f}%)")
    print(f"weights bit for bit equal: {same}")
    print(f"loss per step: {len(steps['step']):,} points (one per batch); their mean per epoch is the epoch's "
          f"train loss: {steps_ok}")
    print(f"test accuracy {summary['accuracy']:.2%}; log_evaluation (store + whole analysis) {log_s:.1f} s")
    print(f"negative AUM: {len(negative):,} training images; of the {len(flipped)} flipped labels "
          f"{len(negative & wrong)} have one, {len(lowest & wrong)} are among the {len(flipped)} lowest")
    print(f"run {run.id} in {workspace}: deepdive serve {workspace}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if same and steps_ok else 1


if __name__ == "__main__":
    sys.exit(main())
