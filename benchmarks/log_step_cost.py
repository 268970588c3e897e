"""What `run.log_step` costs a training loop: the time per call, for a Python float and for a 0-d tensor (kept unread
until written), and the time to write what was kept to the workspace's store.

    PYTHONPATH=. python benchmarks/log_step_cost.py [--calls 20000] [--device cpu|cuda]

Each call logs two numbers (a loss and a learning rate), as a loop logging every step would; the store is a fresh
workspace in a temporary folder. The per-call time includes the writes log_step makes on its own (every 10,000
points: api.STEP_FLUSH_POINTS); the points left over are written by the run.log() after the loop, timed apart.
Prints one line per case and a JSON line.
"""
import argparse
import json
import tempfile
import time

import torch

import deepdive


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=25_000)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    out = {"calls": args.calls, "device": args.device}
    with tempfile.TemporaryDirectory() as ws:
        for case in ("float", "tensor"):
            run = deepdive.init(name=case, workspace=ws)
            # the values exist before the clock starts: only log_step is timed (with the writes it makes on its
            # own, every 10,000 points or 5 s)
            values = ([float(s) for s in range(args.calls)] if case == "float" else
                      list(torch.arange(args.calls, dtype=torch.float32, device=args.device).unbind()))
            start = time.perf_counter()
            for value in values:
                run.log_step(loss=value, lr=0.01)
            calls = time.perf_counter() - start
            start = time.perf_counter()
            run.log(train_loss=1.0)                  # writes what is still kept (tensors read in one transfer)
            write = time.perf_counter() - start
            left = args.calls % 10_000
            run.finish()
            out[case] = {"us_per_call": round(calls / args.calls * 1e6, 2), "last_write_points": left,
                         "last_write_s": round(write, 4)}
            print(f"{case:6s}: {out[case]['us_per_call']:.2f} µs per call (the writes every 10,000 points "
                  f"included); run.log() then wrote the last {left:,} points in {write * 1000:.1f} ms")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
