"""Score ensembles from the test probabilities a sweep kept (benchmarks/sweep.py --probs-out FILE.npz).

    python benchmarks/ensembles.py probs.npz                     # each variant, and all its seeds averaged
    python benchmarks/ensembles.py probs.npz default best/3      # plus one ensemble: all of "default", best seed 3
    python benchmarks/ensembles.py a.npz b.npz default           # several sweeps' files together

For a named ensemble it also prints how many test errors each two members share (what averaging cannot fix).

A member is "variant" (all its seeds) or "variant/seed". Ensembles average probabilities, as `--ensemble K` does.
Combinations are named up front, not searched for: picking members by their test accuracy would fit the test set.

    python benchmarks/ensembles.py --compact probs.npz small.npz  # keep only the images some run is unsure of
    python benchmarks/ensembles.py probs.npz --sizes stack5-an      # ensembles of K of one variant's runs, each K
    python benchmarks/ensembles.py probs.npz --mix a b c            # one run of each variant, different seeds

--sizes scores, for each K from 2 to the variant's number of runs, the mean (and min-max) over every K-run subset,
an unbiased estimate of what one K-model ensemble scores for seeds drawn like these, and the disjoint ensembles in
seed order (0..K-1, K..2K-1, ...), the ones a sweep of that many seeds would report.

--mix scores ensembles of one run of each named variant: the mean (and min-max) over every choice with pairwise
different seeds, and the ensembles `ensemble_members` cycling through those variants would train (member m with
seed s + m): seeds s, s+1, ... for s = 0, K, 2K, ... while every variant has the seed it needs.

A compact file keeps the test images on which at least one run gives the true class at most 0.5 (and their test
rows), and counts the others (n_test): every run gives those more than 0.5, so every average of its runs gets them
right too. Scores from it equal the full file's for any ensemble of its own runs, so it is scored alone, never
beside other files.
"""
import argparse
import itertools
import statistics
import sys

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("args", nargs="+", metavar="FILE.npz | MEMBER",
                   help="the sweeps' .npz files, then the members of one ensemble (variants or variant/seed runs)")
    p.add_argument("--compact", action="store_true", help="write the compact form of FILE.npz to OUT.npz and exit")
    p.add_argument("--sizes", metavar="VARIANT", help="score K-run ensembles of VARIANT's runs for every K")
    p.add_argument("--mix", nargs="+", metavar="VARIANT", help="score ensembles of one run of each VARIANT")
    p.add_argument("--combine", choices=COMBINE, default="mean",
                   help="how members combine: mean probability (as deepdive's Ensemble does; default), geometric "
                        "mean, or majority vote with ties broken by the mean probability")
    args = p.parse_args(argv)
    if args.compact:
        if len(args.args) != 2:
            p.error("--compact takes the full file and the file to write: --compact FILE.npz OUT.npz")
        return compact(*args.args)
    files = [a for a in args.args if a.endswith(".npz")]
    args.members = [a for a in args.args if not a.endswith(".npz")]
    if not files:
        p.error("name at least one .npz file written by benchmarks/sweep.py --probs-out")
    runs, labels, n_test, rows = {}, None, None, None
    for path in files:
        data = np.load(path)
        if "n_test" in data.files:
            if len(files) > 1:
                p.error(f"{path} is a compact file (--compact): it can only be scored alone")
            n_test = int(data["n_test"])
            rows = data["rows"] if "rows" in data.files else None     # compact files before 2026-12-02 lack them
        else:
            rows = np.arange(len(data["labels"]))
        if labels is not None and not np.array_equal(labels, data["labels"]):
            p.error(f"{path} holds other test labels than {files[0]}")
        labels = data["labels"]
        for k in data.files:
            if k not in ("labels", "n_test", "rows"):
                if k in runs:
                    p.error(f"run {k!r} is in two files; rename the variant in one sweep")
                runs[k] = data[k].astype(np.float32)

    omitted = 0 if n_test is None else n_test - len(labels)   # a compact file's images every run gets right

    def ens_acc(member_probs):
        return acc(combine(np.stack(member_probs), args.combine))

    def acc(probs):
        return 100 * float((probs.argmax(1) == labels).sum() + omitted) / (len(labels) + omitted)

    variants = {}
    for key in runs:
        variants.setdefault(key.rsplit("/", 1)[0], []).append(key)
    print(f"{'variant':28s} {'runs':>4s} {'single (median, min-max)':>26s} {'all averaged':>13s}")
    for name, keys in variants.items():
        singles = [acc(runs[k]) for k in keys]
        print(f"{name:28s} {len(keys):4d} {statistics.median(singles):10.2f}% ({min(singles):.2f}-{max(singles):.2f})"
              f" {ens_acc([runs[k] for k in keys]):12.2f}%")
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
        print(f"\nensemble of {len(keys)} ({' + '.join(keys)}): {ens_acc(probs):.2f}%; "
              f"{shared} test images are wrong in at least half of these runs")
        if rows is not None:
            print(f"wrong in every one of them: test rows {rows[wrong.all(0)].tolist()}")
        # Averaging fixes only what the members do not all get wrong: how many errors two members share says more
        # about what an ensemble can gain than their accuracies do.
        width = max(len(k) for k in keys)
        print("test errors two members share (diagonal: the member's own errors):")
        for i, k in enumerate(keys):
            print(f"  {k:{width}s} " + " ".join(f"{int((wrong[i] & wrong[j]).sum()):4d}" for j in range(len(keys))))
    if args.sizes:
        if args.sizes not in variants:
            p.error(f"no variant {args.sizes!r} in {', '.join(files)}; variants: {', '.join(variants)}")
        # seed order, not the file's order, so that "disjoint" means seeds 0..K-1, K..2K-1, ...
        keys = sorted(variants[args.sizes], key=seed_of)
        probs = np.stack([runs[k] for k in keys])
        print(f"\nensembles of K of the {len(keys)} {args.sizes} runs")
        print(f"{'K':>3s} {'subsets':>7s} {'mean':>7s} {'min-max':>13s}  disjoint, in seed order")
        for k in range(2, len(keys) + 1):
            scores = [ens_acc(probs[list(c)]) for c in itertools.combinations(range(len(keys)), k)]
            disjoint = [ens_acc(probs[i:i + k]) for i in range(0, len(keys) - k + 1, k)]
            print(f"{k:3d} {len(scores):7d} {statistics.fmean(scores):6.3f}% {min(scores):5.2f}-{max(scores):5.2f}%  "
                  + " / ".join(f"{d:.2f}" for d in disjoint))
    if args.mix:
        missing = [v for v in args.mix if v not in variants]
        if missing or len(set(args.mix)) < len(args.mix):
            p.error(f"--mix takes distinct variants of {', '.join(files)}; "
                    f"{'unknown: ' + ', '.join(missing) if missing else 'one is named twice'}")
        by_seed = [{seed_of(k): runs[k] for k in variants[v]} for v in args.mix]
        scores = [ens_acc([runs_v[s] for runs_v, s in zip(by_seed, seeds)])
                  for seeds in itertools.product(*[sorted(r) for r in by_seed]) if len(set(seeds)) == len(seeds)]
        k, cycled = len(args.mix), []
        for start in itertools.count(0, k):
            if not all(start + m in r for m, r in enumerate(by_seed)):
                break
            cycled.append(ens_acc([r[start + m] for m, r in enumerate(by_seed)]))
        print(f"\none run each of {' + '.join(args.mix)}, pairwise different seeds: {len(scores)} ensembles, "
              f"mean {statistics.fmean(scores):.3f}% ({min(scores):.2f}-{max(scores):.2f}%)")
        print("as ensemble_members cycling through them would train (member m: seed s + m; s = 0, K, 2K, ...): "
              + (" / ".join(f"{c:.2f}%" for c in cycled) or "none: the seeds are not there"))
    return 0


COMBINE = ("mean", "geometric", "vote")


def combine(member_probs, how="mean"):
    """(members, images, classes) probabilities -> (images, classes) scores whose argmax is the ensemble's
    prediction. A compact file's omitted images (every run gives the true class > 0.5) stay right under each rule:
    the true class wins every vote and has the highest geometric mean."""
    mean = member_probs.mean(0)
    if how == "mean":
        return mean
    if how == "geometric":
        return np.exp(np.log(np.clip(member_probs, 1e-12, 1.0)).mean(0))
    if how == "vote":
        votes = np.zeros_like(mean)
        np.add.at(votes, (np.arange(mean.shape[0])[None, :], member_probs.argmax(2)), 1.0)
        return votes + 0.5 * mean          # a mean probability (< 1) only breaks a tie, never outweighs a vote
    raise ValueError(f"combine must be one of {', '.join(COMBINE)}, got {how!r}")


def seed_of(key):
    """The seed of a run key "variant/seed"."""
    return int(key.rsplit("/", 1)[1])


def compact(src, dst):
    """Write src's runs restricted to the test images some run is unsure of (true class <= 0.5), plus n_test."""
    data = np.load(src)
    if "n_test" in data.files:
        raise SystemExit(f"{src} is compact already")
    labels = data["labels"]
    keys = [k for k in data.files if k not in ("labels", "rows")]
    true_prob = np.stack([data[k][np.arange(len(labels)), labels] for k in keys])   # (runs, images)
    keep = (true_prob <= 0.5).any(0)
    np.savez_compressed(dst, labels=labels[keep], n_test=np.int64(len(labels)), rows=np.flatnonzero(keep),
                        **{k: data[k][keep].astype(np.float16) for k in keys})
    print(f"{dst}: {int(keep.sum())} of {len(labels)} test images kept, {len(keys)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
