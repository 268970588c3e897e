"""Do `run.log_train_batch` and `run.log_step` record on a GPU what they record on the CPU, without a
synchronisation per batch?

    PYTHONPATH=. python benchmarks/recorder_check.py [--device cuda]

Feeds deepdive.analysis.dynamics.Recorder the same batches twice, as device tensors (labels on the device, as a
training loop has them) and as CPU copies: 3 epochs of 4,000 shuffled indices in batches of 256, an index twice in
one batch, 10 classes. On CUDA the device run's `add` calls go under torch.cuda.set_sync_debug_mode("error"), so
any call that waits for the GPU raises. Prints the largest differences and exits 1 if the two records differ
(float16 tolerance; an answer whose top two logits tie may differ in its class). Then `run.log_step` of 500
device 0-d tensors, under the same mode (none may be read before the run writes them), then `run.log()`: the
stored values must be the tensors' own. Then `deepdive.train.histograms.parameter_histograms` of a small conv net
after a backward pass, on the device against numpy's histograms of the same values (a value on a bin edge may
land either side: one per bin allowed), counting the synchronisations it makes (sync-debug "warn"): two, however
many parameters.
"""
import argparse
import sys

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)

    import torch

    from deepdive.analysis.dynamics import Recorder

    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    n, batch, classes = 4000, 256, 10
    labels = torch.randint(0, classes, (n,), generator=g)
    on_device, on_cpu = Recorder(), Recorder()
    for epoch in (1, 2, 3):
        order = torch.randperm(n, generator=g)
        for start in range(0, n, batch):
            idx = order[start:start + batch].clone()
            idx[-1] = idx[0]                                   # one image twice in a batch: its first answer stays
            logits = torch.randn(len(idx), classes, generator=g) * 3
            y = labels[idx]
            logits_dev, y_dev = logits.to(dev), y.to(dev)
            if dev.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")
            try:
                on_device.add(idx, logits_dev, y_dev)
            finally:
                if dev.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
            on_cpu.add(idx, logits, y)
        on_device.end_epoch(epoch)
        on_cpu.end_epoch(epoch)
    a, b = on_device.arrays(), on_cpu.arrays()
    ok = all(np.array_equal(a[k], b[k]) for k in ("epoch", "member", "idx", "label", "given"))
    dp = float(np.nanmax(np.abs(a["p_true"].astype(np.float32) - b["p_true"].astype(np.float32))))
    dm = float(np.nanmax(np.abs(a["margin"].astype(np.float32) - b["margin"].astype(np.float32))))
    same_seen = np.array_equal(a["pred"] >= 0, b["pred"] >= 0)
    pred_diff = int((a["pred"] != b["pred"]).sum())
    ok = ok and same_seen and dp <= 2e-3 and dm <= 2e-2 and pred_diff <= 3
    print(f"recorder on {dev}: {a['p_true'].shape[0]} epochs x {a['p_true'].shape[1]} images; max |p_true| diff "
          f"{dp:.2e}, max |margin| diff {dm:.2e}, answers differing {pred_diff}; "
          f"{'no synchronisation per batch; ' if dev.type == 'cuda' else ''}{'SAME' if ok else 'DIFFERENT'}")
    return 0 if ok and log_step_check(dev) and histogram_check(dev) else 1


def log_step_check(dev) -> bool:
    import tempfile

    import torch

    import deepdive
    from deepdive.analysis import api
    from deepdive.store import Store

    values = torch.rand(500, generator=torch.Generator().manual_seed(1))
    flush, api.STEP_FLUSH_SECONDS = api.STEP_FLUSH_SECONDS, 3600.0     # written at run.log(), not on the way
    with tempfile.TemporaryDirectory() as ws:
        run = deepdive.init(name="log-step", workspace=ws)
        on_dev = values.to(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            for k in range(len(values)):
                run.log_step(loss=on_dev[k] * 2)
        finally:
            if dev.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
            api.STEP_FLUSH_SECONDS = flush
        run.log(train_loss=1.0)
        run.finish()
        with Store.open(ws, create=False) as store:
            got = store.steps(run.id)["loss"]
    ok = got["step"] == list(range(len(values))) and np.allclose(got["value"], (values * 2).tolist(), rtol=1e-6)
    print(f"log_step on {dev}: {len(got['step'])} points, "
          f"{'no synchronisation per call; ' if dev.type == 'cuda' else ''}{'SAME' if ok else 'DIFFERENT'}")
    return ok


def histogram_check(dev) -> bool:
    import warnings

    import torch

    from deepdive.train.histograms import BINS, parameter_histograms

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 26 * 26, 10)).to(dev)
    model(torch.randn(32, 1, 28, 28, device=dev)).logsumexp(1).mean().backward()
    syncs = None
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hists = parameter_histograms(model)
        syncs = sum("synchroniz" in str(w.message) for w in caught)
    finally:
        if dev.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    params = dict(model.named_parameters())
    worst = 0
    for h in hists:
        p = params[h["name"]]
        values = (p if h["kind"] == "weight" else p.grad).detach().double().cpu().numpy().reshape(-1)
        want, _ = np.histogram(values, bins=BINS, range=(h["lo"], h["hi"]))
        worst = max(worst, int(np.abs(np.asarray(h["counts"]) - want).max()), abs(sum(h["counts"]) - values.size))
    ok = len(hists) == 2 * len(params) and worst <= 1 and (dev.type != "cuda" or syncs <= 2)
    print(f"parameter histograms on {dev}: {len(hists)} tensors, largest bin difference from numpy {worst}"
          f"{f', {syncs} synchronisations' if dev.type == 'cuda' else ''}; {'SAME' if ok else 'DIFFERENT'}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
