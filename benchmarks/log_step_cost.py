"""What `run.log_step` costs a training loop: the time per call, for a Python float and for a 0-d tensor (kept unread
until written), and, in the PyTorch examples/mnist loop, blocks of batches in turn without and with it.

    PYTHONPATH=. python benchmarks/log_step_cost.py [--calls 25000] [--rounds 15] [--device cpu|cuda]

Each call logs two numbers (a loss and a learning rate); the store is a fresh workspace in a temporary folder. The
per-call time includes the writes log_step makes on its own (every 10,000 points: api.STEP_FLUSH_POINTS); the
points left over are written by the run.log() after the loop, timed apart. The loop part is benchmarks/own_loop.py's:
the examples/mnist network (deepdive.train.reference) over a shuffled DataLoader of the 60,000 MNIST training
images (`deepdive.indexed`, batches of 64), every batch's answers to `run.log_train_batch`; in blocks of 40 batches
it logs per step nothing, the loss as a tensor (`loss.detach()`) or as the float the loop read anyway, the three in
a rotating order for --rounds rounds: the host's drift hits each alike. Prints one line per case and a JSON line.
"""
import argparse
import json
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

import deepdive


def per_call(ws, calls, device) -> dict:
    out = {}
    for case in ("float", "tensor"):
        run = deepdive.init(name=case, workspace=ws)
        # the values exist before the clock starts: only log_step is timed (with the writes it makes on its own)
        values = ([float(s) for s in range(calls)] if case == "float" else
                  list(torch.arange(calls, dtype=torch.float32, device=device).unbind()))
        start = time.perf_counter()
        for value in values:
            run.log_step(loss=value, lr=0.01)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        run.log(train_loss=1.0)                  # writes what is still kept (tensors read in one transfer)
        write = time.perf_counter() - start
        run.finish()
        left = calls % 10_000
        out[case] = {"us_per_call": round(seconds / calls * 1e6, 2), "last_write_points": left,
                     "last_write_s": round(write, 4)}
        print(f"{case:6s}: {out[case]['us_per_call']:.2f} µs per call (the writes every 10,000 points included); "
              f"run.log() then wrote the last {left:,} points in {write * 1000:.1f} ms")
    return out


def in_a_loop(ws, rounds, device, block=40) -> dict:
    from torch.utils.data import DataLoader, TensorDataset

    from deepdive.data import load_dataset
    from deepdive.train.reference import REFERENCE, ReferenceNet

    torch.manual_seed(0)
    mnist = load_dataset("mnist", progress=False)
    x = torch.from_numpy(mnist.train_images).float().div(255).unsqueeze(1)
    y = torch.from_numpy(mnist.train_labels.astype(np.int64))
    model = ReferenceNet().to(device)
    opt = torch.optim.Adadelta(model.parameters(), lr=REFERENCE["lr"])
    run = deepdive.init(name="loop", workspace=ws)
    loader = DataLoader(deepdive.indexed(TensorDataset(x, y)), batch_size=REFERENCE["batch_size"], shuffle=True)
    batches_left = iter(loader)

    def next_batch():
        nonlocal batches_left
        try:
            return next(batches_left)
        except StopIteration:            # an epoch ends: run.log() closes its answers
            run.log(train_loss=0.0)
            batches_left = iter(loader)
            return next(batches_left)

    def batches(case) -> float:
        start = time.perf_counter()
        for _ in range(block):
            xb, yb, ib = (t.to(device) for t in next_batch())
            out = model(xb)
            run.log_train_batch(ib, out, yb)
            loss = F.nll_loss(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = loss.item()                  # what a loop reads anyway, for its own running loss
            if case == "tensor":
                run.log_step(loss=loss.detach())
            elif case == "float":
                run.log_step(loss=value)
        return (time.perf_counter() - start) / block * 1000

    cases = ("none", "tensor", "float")
    for case in cases:                           # warm-up
        batches(case)
    ms = {case: [] for case in cases}
    for r in range(rounds):
        for case in cases[r % 3:] + cases[:r % 3]:
            ms[case].append(batches(case))
    run.finish()
    out = {case: {"ms_per_batch_median": round(statistics.median(v), 2), "min": round(min(v), 2),
                  "max": round(max(v), 2)} for case, v in ms.items()}
    for case, o in out.items():
        print(f"loop, {case:6s}: {o['ms_per_batch_median']:.2f} ms a batch (median of {rounds} blocks of {block}; "
              f"{o['min']:.2f}-{o['max']:.2f})")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=25_000)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as ws:
        out = {"calls": args.calls, "device": args.device, **per_call(ws, args.calls, args.device),
               "loop": in_a_loop(ws, args.rounds, args.device)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
