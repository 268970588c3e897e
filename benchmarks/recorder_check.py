"""Does `run.log_train_batch` record on a GPU what it records on the CPU, without a synchronisation per batch?

    PYTHONPATH=. python benchmarks/recorder_check.py [--device cuda]

Feeds deepdive.analysis.dynamics.Recorder the same batches twice, as device tensors (labels on the device, as a
training loop has them) and as CPU copies: 3 epochs of 4,000 shuffled indices in batches of 256, an index twice in
one batch, 10 classes. On CUDA the device run's `add` calls go under torch.cuda.set_sync_debug_mode("error"), so
any call that waits for the GPU raises. Prints the largest differences and exits 1 if the two records differ
(float16 tolerance; an answer whose top two logits tie may differ in its class).
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
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
