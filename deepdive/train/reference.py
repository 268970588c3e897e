"""The PyTorch examples/mnist recipe, in our own code, as the bench's reference point.

Same network and schedule as github.com/pytorch/examples/blob/main/mnist/main.py: conv 32 (3×3) → ReLU →
conv 64 (3×3) → ReLU → 2×2 max-pool → dropout 0.25 → fc 128 → ReLU → dropout 0.5 → fc 10; Adadelta lr 1.0,
StepLR γ 0.7 per epoch, batch 64, shuffled, no augmentation, inputs normalised with 0.1307 / 0.3081.
Differences, on purpose: it trains on the same 55 000-image train split as our presets (the example uses all
60 000), the batches are gathered from tensors in memory (as our recipe does) instead of a DataLoader, and the
last partial batch is kept as in the example. Only torch, numpy, tqdm and the stdlib: runs on the bare GPU box.
"""
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from deepdive.malloc import keep_freed_memory
from deepdive.models.cnn import Normalize

REFERENCE = {"epochs": 14, "batch_size": 64, "lr": 1.0, "gamma": 0.7, "mean": 0.1307, "std": 0.3081}


class ReferenceNet(nn.Module):
    """examples/mnist's Net, with the input normalisation moved into the model (inputs in [0, 1])."""

    gradcam_layer_name = "conv2"

    def __init__(self, num_classes=10):
        super().__init__()
        self.norm = Normalize((REFERENCE["mean"],), (REFERENCE["std"],))
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(self.norm(x)))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def train_reference(images_uint8, labels, *, epochs=REFERENCE["epochs"], seed=0, device="cpu", eval_hook=None,
                    progress=True):
    """Train ReferenceNet on (N, 28, 28) uint8 images. After each epoch, outside the timed region,
    eval_hook(model, row) is called with row = {"epoch", "train_loss", "seconds", "train_seconds"} (seconds of
    that epoch, and cumulative). Returns (model in eval mode, list of rows)."""
    from tqdm.auto import tqdm

    dev = torch.device(device)
    if dev.type == "cpu":
        keep_freed_memory()  # as train() does: the bench compares recipes, not malloc settings
    torch.manual_seed(seed)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).unsqueeze(1).to(dev)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=dev)
    model = ReferenceNet().to(dev)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=REFERENCE["lr"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=REFERENCE["gamma"])
    bs, n = REFERENCE["batch_size"], x.shape[0]
    rows, total = [], 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        _sync(dev)
        t0 = time.perf_counter()
        perm = torch.randperm(n, device=dev, generator=gen)
        loss_sum = torch.zeros((), device=dev)
        for start in tqdm(range(0, n, bs), desc=f"reference epoch {epoch}/{epochs}", unit="step",
                          disable=not progress, leave=False, dynamic_ncols=True):
            idx = perm[start:start + bs]
            xb = x[idx].float().div_(255.0)
            optimizer.zero_grad(set_to_none=True)
            loss = F.nll_loss(model(xb), y[idx])
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
        scheduler.step()
        _sync(dev)
        seconds = time.perf_counter() - t0
        total += seconds
        row = {"epoch": epoch, "train_loss": loss_sum.item() / n, "seconds": seconds, "train_seconds": total}
        rows.append(row)
        if eval_hook is not None:
            model.eval()
            eval_hook(model, row)
    return model.eval(), rows


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
