"""Does a resumed run end where the uninterrupted one does? On the CPU tests/test_recipe.py asserts it bit for bit;
this runs the same check on any device (the GPU machine has no pytest), with the device's own step: on CUDA a
captured graph whose generator and momentum buffers are restored in place.

    PYTHONPATH=. python benchmarks/resume_check.py [--device cuda] [--preset fast] [--ensemble 2] [--overrides JSON]

Trains a small run twice (seed 3, by default 3 epochs per member on 5,000 images): once whole, once stopped after
its second epoch and resumed from train_state.pt. Prints the largest weight difference and whether the histories
match; exits 1 if they differ.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="fast")
    p.add_argument("--ensemble", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3, help="per member; the run stops after its second epoch")
    p.add_argument("--limit-train", type=int, default=5000)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--overrides", default=None, help='recipe overrides as JSON, e.g. \'{"prune": 0.5}\'')
    args = p.parse_args(argv)

    import torch

    from deepdive.data import load_dataset
    from deepdive.paths import TRAIN_STATE
    from deepdive.train.recipe import load_train_state, reproducible, train

    ds = load_dataset("mnist", data_dir=args.data_dir, progress=False)
    kw = dict(epochs=args.epochs, seed=3, device=args.device, limit_train=args.limit_train, ensemble=args.ensemble,
              progress=False, overrides=json.loads(args.overrides) if args.overrides else None)
    with tempfile.TemporaryDirectory() as tmp:
        whole = train(ds, args.preset, checkpoint_dir=Path(tmp) / "whole", **kw)
        rows = []

        def stop_after_second_epoch(row):
            rows.append(row)
            if len(rows) == 2:
                raise KeyboardInterrupt

        try:
            train(ds, args.preset, checkpoint_dir=Path(tmp) / "cut", on_epoch=stop_after_second_epoch, **kw)
            print("the run was not stopped", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            pass
        state = load_train_state(Path(tmp) / "cut" / TRAIN_STATE)
        resumed = train(ds, args.preset, checkpoint_dir=Path(tmp) / "cut", resume=state, **kw)

    def strip(history):
        return [reproducible(row) for row in history]

    diff = max((a.double() - b.double()).abs().max().item() if a.is_floating_point() else float(not torch.equal(a, b))
               for a, b in zip(resumed.model.state_dict().values(), whole.model.state_dict().values()))
    same_history = strip(resumed.history) == strip(whole.history)
    print(f"resume check on {resumed.device} ({args.preset}{' ' + args.overrides if args.overrides else ''}, "
          f"ensemble {args.ensemble}, cuda_graphs "
          f"{resumed.config['cuda_graphs']}, bf16 {resumed.config['amp']}): largest weight difference {diff:.3g}, "
          f"histories {'identical' if same_history else 'DIFFER'}")
    dynamics_ok = check_dynamics(whole.dynamics, resumed.dynamics, whole.history)
    return 0 if diff == 0 and same_history and dynamics_ok else 1


def check_dynamics(whole, resumed, history) -> bool:
    """The training dynamics the step recorded (on CUDA inside the captured graph): every epoch kept with as many
    images as it trained (a pruned epoch's count is in its history row; a whole one drops at most a batch, its
    ragged tail), finite where trained, and the resumed run's the same."""
    import numpy as np

    if whole is None or resumed is None:
        print("training dynamics: NOT RECORDED")
        return False
    seen = whole["pred"] >= 0
    n = seen.shape[1]
    counts_ok = len(history) == seen.shape[0] and all(
        k == row["train_images"] if "train_images" in row else k > 0.9 * n for k, row in zip(seen.sum(1), history))
    finite = bool(np.isfinite(whole["margin"][seen].astype(np.float32)).all()
                  and np.isfinite(whole["p_true"][seen].astype(np.float32)).all())
    same = all(np.array_equal(whole[k], resumed[k], equal_nan=k in ("p_true", "margin")) for k in whole)
    right = float((whole["pred"][seen] == np.broadcast_to(whole["label"], whole["pred"].shape)[seen]).mean())
    print(f"training dynamics: {whole['pred'].shape[0]} epochs x {whole['pred'].shape[1]} images, "
          f"{seen.mean():.1%} of them trained, {right:.1%} answered right, finite {finite}, "
          f"resumed {'identical' if same else 'DIFFER'}, counts per epoch {'as trained' if counts_ok else 'WRONG'}")
    return finite and same and counts_ok


if __name__ == "__main__":
    sys.exit(main())
