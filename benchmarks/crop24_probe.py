"""Probe, not product code: `fast`'s CPU net trained and tested on the central 24x24 of each (augmented) image.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/crop24_probe.py SEED... [sweep.py options, e.g. --out F]

MNIST digits sit in a 20x20 box centred in 28x28, so the outer 2-pixel ring is nearly empty; cropping it saves
26% of a step's operations (benchmarks/cpu_throughput.py: the step is compute-bound). Results and the rule they
were held to: benchmarks/results/cpu_fast_crop24_intel_2026-11-30.jsonl and benchmarks/EXPERIMENTS.md (`fast`).
The crop lives in the model here, so a product version would also declare `gradcam_margin = 2` (as ConvNet's
valid stem does) for Grad-CAM to place its maps on the central 24x24 they cover.
"""
import json
import sys

import sweep      # benchmarks/sweep.py, beside this file: its train / evaluate / report loop does the rest

from deepdive.models import ARCHS, ConvNet


class Crop24(ConvNet):
    """ConvNet sized for 24x24 inputs (24 -> 12 -> 6 -> 3: the same 3x3 head as 28x28) that crops its input."""

    def __init__(self, image_size=28, **kw):
        super().__init__(image_size=24, **kw)

    def forward(self, x):
        return super().forward(x[..., 2:26, 2:26])


def main(argv):
    ARCHS["cnn-crop24"] = (Crop24, {})     # registered in this process only
    seeds, rest = [int(a) for a in argv if a.isdigit()], [a for a in argv if not a.isdigit()]
    variant = {"name": "fast-crop24", "preset": "fast", "seeds": seeds or [0],
               "overrides": {"arch": "cnn-crop24",
                             "arch_kwargs": {"stem": "single", "pool_first": True, "widths": [32, 48, 128]}}}
    return sweep.main([json.dumps([variant]), "--device", "cpu", *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
