"""Print the `deepdive bench` table for one or more --json-out files (e.g. several bench runs of one machine).

    PYTHONPATH=. python benchmarks/bench_table.py bench.jsonl [more.jsonl ...]
"""
import sys

from deepdive.train.bench import format_table, read_jsonl


def main(paths):
    records, summaries = [], []
    for path in paths:
        r, s = read_jsonl(path)
        records += r
        summaries += s
    devices = sorted({r["device"] for r in records})
    print(format_table(records, summaries, device=", ".join(devices)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
