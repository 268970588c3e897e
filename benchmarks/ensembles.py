"""Score ensembles from the test probabilities a sweep kept (benchmarks/sweep.py --probs-out FILE.npz).

    python benchmarks/ensembles.py probs.npz                     # each variant, and all its seeds averaged
    python benchmarks/ensembles.py probs.npz default best/3      # plus one ensemble: all of "default", best seed 3

A member is "variant" (all its seeds) or "variant/seed". Ensembles average probabilities, as `--ensemble K` does.
Combinations are named up front, not searched for: picking members by their test accuracy would fit the test set.
"""
import argparse
import statistics
import sys

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("npz")
    p.add_argument("members", nargs="*", help="one ensemble, from these variants / variant/seed runs")
    args = p.parse_args(argv)
    data = np.load(args.npz)
    labels = data["labels"]
    runs = {k: data[k].astype(np.float32) for k in data.files if k != "labels"}

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
                p.error(f"no run or variant {m!r} in {args.npz}; variants: {', '.join(variants)}")
        print(f"\nensemble of {len(keys)} ({' + '.join(keys)}): {acc(np.mean([runs[k] for k in keys], axis=0)):.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
