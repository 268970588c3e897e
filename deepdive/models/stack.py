"""A second family of nets, for ensembles whose members make different mistakes: a plain stack of unpadded k×k
conv-bn-relu layers, no pooling at all, then a linear classifier over the last (small) map. After An et al.
2020, "An Ensemble of Simple Convolutional Neural Network Models for MNIST Digit Recognition" (their M3 / M5 /
M7 nets: 3×3, 5×5 and 7×7 kernels; the receptive field grows by k-1 pixels per layer and never jumps, as it does
at a max-pool).

Why a second family: averaging many ConvNet (deepdive.models.cnn) runs stalls at ~99.75% because the runs share
their mistakes (benchmarks/EXPERIMENTS.md, `best`). These nets see the digit through other receptive fields
and without pooling's shift invariance. Single stack5 models score about what the cnn does (H200 medians
99.71-99.73%), but three An-style ones average to 99.76-99.80% where three cnns stay at 99.70-99.72%, so
`best --ensemble K` trains stack5 members (numbers in benchmarks/EXPERIMENTS.md).

Layers are named submodules called in definition order (conv1, bn1, act1, ..., flatten, dropout, fc, bn_out),
as in ConvNet, so the analysis hooks them by name. Only torch is imported: this runs on the bare GPU machine.
"""
import torch.nn as nn

from deepdive.models.cnn import Float32Linear, Normalize

# kernel -> channel widths per layer, An et al.'s M3 / M5 / M7: each layer shrinks a 28-pixel map by k-1 pixels,
# so the stacks end on an 8×8 (M3, M5) or 4×4 (M7) map.
STACKS = {
    3: (32, 48, 64, 80, 96, 112, 128, 144, 160, 176),
    5: (32, 64, 96, 128, 160),
    7: (48, 96, 144, 192),
}


class StackNet(nn.Module):
    """len(widths) × (unpadded kernel×kernel conv, BatchNorm, ReLU), flatten, dropout, linear, BatchNorm on the
    logits (An et al.'s output BatchNorm: it keeps the logits' scale in check without a softmax temperature)."""

    def __init__(self, num_classes=10, in_channels=1, image_size=28, kernel=5, widths=None, dropout=0.0,
                 mean=None, std=None, fp32_head=False):
        super().__init__()
        if kernel not in STACKS and widths is None:
            raise ValueError(f"kernel {kernel!r} has no default widths; pass widths or use one of {sorted(STACKS)}")
        widths = tuple(widths) if widths is not None else STACKS[kernel]
        side = image_size - len(widths) * (kernel - 1)
        if side < 1:
            raise ValueError(f"{len(widths)} unpadded {kernel}x{kernel} convs need images larger than "
                             f"{len(widths) * (kernel - 1)} pixels, got {image_size}")
        self.norm = Normalize(mean, std, in_channels)
        c_in = in_channels
        for i, c_out in enumerate(widths, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c_out, kernel, bias=False))   # BN's shift replaces a bias
            setattr(self, f"bn{i}", nn.BatchNorm2d(c_out))
            setattr(self, f"act{i}", nn.ReLU())
            c_in = c_out
        self.gradcam_layer_name = f"conv{len(widths)}"
        # The last map's cells centre on the input's central side x side pixels (stride 1, no padding): Grad-CAM
        # places the map there instead of stretching it over the whole image (deepdive.analysis.saliency).
        self.gradcam_margin = (image_size - side) // 2
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = (Float32Linear if fp32_head else nn.Linear)(c_in * side * side, num_classes, bias=False)
        self.bn_out = nn.BatchNorm1d(num_classes)
        self.num_classes = num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # The classifier keeps PyTorch's default init: a zero one would feed bn_out a constant, whose variance is 0.

    def forward(self, x):
        for module in self.children():
            x = module(x)
        return x
