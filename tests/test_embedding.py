"""Penultimate features and the 2-D t-SNE map."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from deepdive.analysis import embedding
from deepdive.errors import DeepdiveError


class TwoHeads(nn.Module):
    """Custom model: the classifier is defined before the body and followed by dropout."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 5)
        self.body = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        return self.drop(self.fc(self.body(x)))


def test_features_are_the_last_linear_layers_input():
    torch.manual_seed(0)
    model = TwoHeads().eval()
    x = torch.rand(7, 1, 12, 12)
    feats = embedding.penultimate_features(model, x, batch_size=3)
    assert feats.shape == (7, 32) and feats.dtype == np.float32
    with torch.no_grad():
        np.testing.assert_allclose(feats, model.body(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["cnn-small", "stack5"])
def test_deepdive_nets_and_a_mixed_ensemble(arch):
    """Every deepdive family: stack nets put a BatchNorm on the logits after their classifier (An et al.), which
    must not hide the classifier's input. (`best --ensemble` trains stack5 members.)"""
    from deepdive.models import Ensemble, build_model

    torch.manual_seed(0)
    net = build_model(arch).eval()
    x = torch.rand(3, 1, 28, 28)
    feats = embedding.penultimate_features(net, x)
    assert feats.shape == (3, net.fc.in_features)
    captured = []
    net.fc.register_forward_hook(lambda module, args, out: captured.append(args[0].flatten(1)))
    with torch.no_grad():
        net(x)
    np.testing.assert_allclose(feats, captured[0].numpy(), rtol=1e-5, atol=1e-6)
    other = build_model("cnn-small").eval()
    ens = Ensemble([net, other])
    assert embedding.penultimate_features(ens, x).shape == (3, net.fc.in_features + other.fc.in_features)


def test_model_not_ending_in_linear_is_a_clear_error():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.ReLU())
    with pytest.raises(DeepdiveError, match="last layer is nn.Linear.*ends with ReLU"):
        embedding.penultimate_features(model, torch.rand(2, 1, 4, 4))


def _two_clusters(n=300, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.zeros((2, dim), np.float32)
    centres[1, :] = 4.0
    labels = np.arange(n) % 2
    return centres[labels] + rng.normal(size=(n, dim)).astype(np.float32), labels


def test_projection_separates_clusters_and_is_deterministic():
    x, labels = _two_clusters()
    a = embedding.project_2d(x, seed=3)
    assert a.shape == (300, 2) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, embedding.project_2d(x, seed=3))
    centroids = np.stack([a[labels == k].mean(0) for k in (0, 1)])
    nearest = np.argmin(((a[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).all()
    spread = max(np.linalg.norm(a[labels == k] - centroids[k], axis=1).mean() for k in (0, 1))
    assert np.linalg.norm(centroids[0] - centroids[1]) > 3 * spread


def test_projection_of_many_points_uses_the_fast_path():
    x, labels = _two_clusters(n=1500, dim=80, seed=1)  # > 1000 points: PCA to 50 dims, Annoy + FFT
    a = embedding.project_2d(x)
    assert a.shape == (1500, 2) and np.isfinite(a).all()
    centroids = np.stack([a[labels == k].mean(0) for k in (0, 1)])
    nearest = np.argmin(((a[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() > 0.99


def test_tiny_and_bad_inputs():
    few = embedding.project_2d(np.random.default_rng(0).normal(size=(4, 6)))
    assert few.shape == (4, 2) and np.isfinite(few).all()
    assert embedding.project_2d(np.ones((3, 5))).shape == (3, 2)
    with pytest.raises(DeepdiveError, match="finite"):
        embedding.project_2d(np.full((20, 3), np.nan))


def test_fewer_points_than_pca_dims():
    # 32 points of 128 features: PCA must keep at most 32 components (this used to crash log_evaluation on 32 images).
    coords = embedding.project_2d(np.random.default_rng(1).normal(size=(32, 128)))
    assert coords.shape == (32, 2) and np.isfinite(coords).all()
