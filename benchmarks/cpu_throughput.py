"""Training-step throughput on the CPU for model / layout / precision / compile variants.

    PYTHONPATH=. python benchmarks/cpu_throughput.py [--batch 256] [--threads 1] cnn:cl-bf16 cnn:cl cnn:bf16 ...

A variant is ARCH:FLAGS, ARCH one of deepdive.models.ARCHS or wA-B-C (ConvNet widths), FLAGS a '-'-joined
subset of cl (channels_last), bf16 (bf16 autocast), compile (torch.compile), pf (ConvNet pool_first), single
(ConvNet's 5x5 single-conv stem), valid (ConvNet's stem_padding "valid"). Reports per-step *process CPU
time* (min over rounds) next to wall time: on a shared machine wall time depends on the neighbours' load,
while single-threaded CPU time is close to what the step costs on a quiet core. Multiply by the core count
you will train on, and expect 2 threads to scale by somewhat less than 2x. Like train() on the CPU, it first keeps
freed memory in the process (deepdive.malloc; --glibc-defaults to time without).
The last column is the arithmetic rate the step reached: its floating-point operations (counted once, eagerly, by
torch.utils.flop_counter: convolutions and matmuls, forward and backward) over its wall time. Set it against the
machine's peak (cores x clock x FLOPs per cycle) to see whether a faster step needs fewer operations or faster ones.
"""
import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from deepdive.malloc import keep_freed_memory
from deepdive.models import build_model


def variant(spec, batch):
    arch, _, flags = spec.partition(":")
    kw = {}
    if arch.startswith("w"):
        kw["widths"] = tuple(int(v) for v in arch[1:].split("-"))
        arch = "cnn"
    flags = set(flags.split("-")) if flags else set()
    if "pf" in flags:
        kw["pool_first"] = True
    if "single" in flags:
        kw["stem"] = "single"
    if "valid" in flags:
        kw["stem_padding"] = "valid"
    fmt = torch.channels_last if "cl" in flags else torch.contiguous_format
    torch.manual_seed(0)
    model = build_model(arch, **kw).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    fwd = torch.compile(model) if "compile" in flags else model
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step(net=fwd):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in flags):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:    # the eager model: compiling changes no arithmetic
        step(model)
    return step, counter.get_total_flops()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="+")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--glibc-defaults", action="store_true", help="leave malloc's thresholds alone (page faults)")
    args = p.parse_args()
    if not args.glibc_defaults:
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads {torch.get_num_threads()}, batch {args.batch}")
    steps, flops = {}, {}
    for spec in args.variants:
        t0 = time.perf_counter()
        steps[spec], flops[spec] = variant(spec, args.batch)
        for _ in range(3):  # warm-up: oneDNN primitive creation, compilation
            steps[spec]()
        print(f"{spec:28s} warm-up {time.perf_counter() - t0:6.1f}s", flush=True)
    results = {s: [] for s in steps}
    for _ in range(args.rounds):  # interleaved, so slow phases of the neighbours' load hit every variant
        for spec, step in steps.items():
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(args.steps):
                step()
            results[spec].append(((time.process_time() - c0) / args.steps, (time.perf_counter() - w0) / args.steps))
    for spec, rs in results.items():
        cpu = min(r[0] for r in rs)
        wall = min(r[1] for r in rs)
        print(f"{spec:28s} cpu {cpu * 1e3:7.1f} ms/step  wall {wall * 1e3:7.1f} ms/step  "
              f"cpu-s per 55k-image epoch {55000 / args.batch * cpu:6.1f}  "
              f"{flops[spec] / 1e9:6.2f} GFLOP/step at {flops[spec] / wall / 1e9:5.0f} GFLOP/s", flush=True)


if __name__ == "__main__":
    main()
