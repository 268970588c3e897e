"""Probe, not product code: `fast`'s CPU net trained and tested on the central 24x24 of each (augmented) image.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/crop24_probe.py SEED      # prints one JSON line

MNIST digits sit in a 20x20 box centred in 28x28, so the outer 2-pixel ring is nearly empty; cropping it saves
26% of a step's operations (benchmarks/cpu_throughput.py: the step is compute-bound). Results and the rule they
were held to: benchmarks/results/cpu_fast_crop24_intel_2026-11-30.jsonl and the `fast` comment in recipe.py.
The crop lives in the model here, so a product version would also need Grad-CAM maps placed back on the 28x28
input (they would cover only its central 24x24).
"""
import json
import sys

import torch

from deepdive.data import load_dataset
from deepdive.models import ARCHS, ConvNet
from deepdive.train.recipe import evaluate, train


class Crop24(ConvNet):
    """ConvNet sized for 24x24 inputs (24 -> 12 -> 6 -> 3: the same 3x3 head as 28x28) that crops its input."""

    def __init__(self, image_size=28, **kw):
        super().__init__(image_size=24, **kw)

    def forward(self, x):
        return super().forward(x[..., 2:26, 2:26])


def main(seed):
    ARCHS["cnn-crop24"] = (Crop24, {})
    ds = load_dataset("mnist", progress=False)
    overrides = {"arch": "cnn-crop24", "arch_kwargs": {"stem": "single", "pool_first": True, "widths": (32, 48, 128)}}
    result = train(ds, "fast", seed=seed, device="cpu", overrides=overrides, progress=False)
    probs, _ = evaluate(result.model, ds.test_images, ds.test_labels)
    acc = float((torch.as_tensor(probs).argmax(1) == torch.as_tensor(ds.test_labels)).float().mean())
    print(json.dumps({"name": "fast-crop24", "seed": seed, "test_accuracy": round(acc, 4),
                      "train_seconds": round(result.train_seconds, 1)}))


if __name__ == "__main__":
    main(int(sys.argv[1]))
