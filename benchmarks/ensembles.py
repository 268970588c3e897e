"""Score ensembles from the test probabilities a sweep kept (benchmarks/sweep.py --probs-out FILE.npz).

    python benchmarks/ensembles.py probs.npz                     # each variant, and all its seeds averaged
    python benchmarks/ensembles.py probs.npz default best/3      # plus one ensemble: all of "default", best seed 3
    python benchmarks/ensembles.py a.npz b.npz default           # several sweeps' files together

For a named ensemble it also prints how many test errors each two members share (what averaging cannot fix).

A member is "variant" (all its seeds) or "variant/seed". Ensembles average probabilities, as `--ensemble K` does.
Combinations are named up front, not searched for: picking members by their test accuracy would fit the test set.
"""
import argparse
import statistics
import sys

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("args", nargs="+", metavar="FILE.npz | MEMBER",
                   help="the sweeps' .npz files, then the members of one ensemble (variants or variant/seed runs)")
    args = p.parse_args(argv)
    files = [a for a in args.args if a.endswith(".npz")]
    args.members = [a for a in args.args if not a.endswith(".npz")]
    if not files:
        p.error("name at least one .npz file written by benchmarks/sweep.py --probs-out")
    runs, labels = {}, None
    for path in files:
        data = np.load(path)
        if labels is not None and not np.array_equal(labels, data["labels"]):
            p.error(f"{path} holds other test labels than {files[0]}")
        labels = data["labels"]
        for k in data.files:
            if k != "labels":
                if k in runs:
                    p.error(f"run {k!r} is in two files; rename the variant in one sweep")
                runs[k] = data[k].astype(np.float32)

    def acc(probs):
        return 100 * float((probs.argmax(1) == labels).mean())

    variants = {}
    for key in runs:
        variants.setdefault(key.rsplit("/", 1)[0], []).append(key)
    print(f"{'variant':28s} {'runs':>4s} {'single (median, min-max)':>26s} {'all averaged':>13s}")
    for name, keys in variants.items():
        singles = [acc(runs[k]) for k in keys]
        print(f"{name:28s} {len(keys):4d} {statistics.median(singles):10.2f}% ({min(singles):.2f}-{max(singles):.2f})"
              f" {acc(np.mean([runs[k] for k in keys], axis=0)):12.2f}%")
    if args.members:
        keys = []
        for m in args.members:
            if m in runs:
                keys.append(m)
            elif m in variants:
                keys += variants[m]
            else:
                p.error(f"no run or variant {m!r} in {', '.join(files)}; variants: {', '.join(variants)}")
        probs = np.stack([runs[k] for k in keys])
        wrong = probs.argmax(2) != labels                                   # (members, images)
        shared = int((wrong.mean(0) >= 0.5).sum())
        print(f"\nensemble of {len(keys)} ({' + '.join(keys)}): {acc(probs.mean(0)):.2f}%; "
              f"{shared} test images are wrong in at least half of these runs")
        # Averaging fixes only what the members do not all get wrong: how many errors two members share says more
        # about what an ensemble can gain than their accuracies do.
        width = max(len(k) for k in keys)
        print("test errors two members share (diagonal: the member's own errors):")
        for i, k in enumerate(keys):
            print(f"  {k:{width}s} " + " ".join(f"{int((wrong[i] & wrong[j]).sum()):4d}" for j in range(len(keys))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
