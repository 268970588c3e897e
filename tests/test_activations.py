"""Per-layer feature maps and their statistics, for custom, Sequential, 3-channel and deepdive models."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from deepdive.analysis import activations
from deepdive.errors import DeepdiveError


class Custom(nn.Module):
    """Not a Sequential: layers are called out of definition order, with an in-place ReLU after conv1."""

    def __init__(self, in_channels=1, size=28):
        super().__init__()
        self.head = nn.Linear(8 * (size // 4) ** 2, 10)  # defined first, called last
        self.conv1 = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        x = self.pool(self.act(self.bn(self.conv1(x))))
        x = self.pool(torch.relu(self.conv2(x)))  # functional ReLU: not a module, not listed
        return self.head(self.drop(x.flatten(1)))


def test_layers_in_forward_order_with_shapes():
    torch.manual_seed(0)
    layers = activations.compute(Custom().eval(), torch.rand(1, 28, 28))
    assert [(l["name"], l["type"], l["shape"]) for l in layers] == [
        ("conv1", "conv", [4, 28, 28]), ("bn", "norm", [4, 28, 28]), ("act", "activation", [4, 28, 28]),
        ("pool", "pool", [4, 14, 14]), ("conv2", "conv", [8, 14, 14]), ("pool#2", "pool", [8, 7, 7]),
        ("head", "linear", [10])]
    for layer in layers:
        assert layer["maps"].shape == tuple(layer["shape"]) and layer["maps"].dtype == np.float32
    # the in-place ReLU did not overwrite the recorded conv/bn outputs
    assert (layers[1]["maps"] < 0).any() and (layers[2]["maps"] >= 0).all()


def test_architecture_lists_the_layers_as_called():
    """Every leaf module in call order (the shared pool once, called twice; the dropout too), its output shape and
    own parameters; a parameter the forward uses directly is counted apart; frozen ones are told."""
    class Scaled(Custom):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(10))

        def forward(self, x):
            return super().forward(x) * self.scale

    model = Scaled()
    model.conv1.requires_grad_(False)
    a = activations.architecture(model, torch.rand(1, 1, 28, 28))
    assert [(r["name"], r["type"], r["output"], r["calls"]) for r in a["layers"]] == [
        ("conv1", "Conv2d", [4, 28, 28], 1), ("bn", "BatchNorm2d", [4, 28, 28], 1), ("act", "ReLU", [4, 28, 28], 1),
        ("pool", "MaxPool2d", [4, 14, 14], 2), ("conv2", "Conv2d", [8, 14, 14], 1), ("drop", "Dropout", [392], 1),
        ("head", "Linear", [10], 1)]
    assert [r["params"] for r in a["layers"]] == [40, 8, 0, 0, 296, 0, 3930]
    assert a["total_params"] == sum(p.numel() for p in model.parameters()) == 40 + 8 + 296 + 3930 + 10
    assert a["other_params"] == 10 and a["trainable_params"] == a["total_params"] - 40
    assert a["layers"][0]["trainable"] == 0 and "kernel_size=(3, 3)" in a["layers"][0]["details"]
    assert a["input"] == [1, 28, 28] and a["param_bytes"] == 4 * a["total_params"] and model.training


def test_stats_are_fractions_and_na_for_vectors():
    torch.manual_seed(0)
    for layer in activations.compute(Custom().eval(), torch.rand(1, 28, 28)):
        s = layer["stats"]
        assert 0 <= s["active_fraction"] <= 1
        if layer["type"] == "linear":
            assert s["dead_channels"] is s["dead_fraction"] is s["input_corr_max"] is s["input_corr_mean"] is None
        else:
            assert 0 <= s["dead_fraction"] <= 1
            assert 0 <= s["input_corr_mean"] <= s["input_corr_max"] <= 1
        expected = float((layer["maps"] > 0).mean())
        assert s["active_fraction"] == pytest.approx(expected)


def test_dead_filter_detection():
    conv = nn.Conv2d(1, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight[1] = 0
        conv.bias[1] = -0.5  # filter 1: constant negative map -> dead
        conv.weight[3] = 0
        conv.bias[3] = 0.0  # filter 3: all zeros -> dead (nothing > 0)
        conv.bias[[0, 2]] = 0.1
        conv.weight[[0, 2]] = conv.weight[[0, 2]].abs()  # positive filters on a positive image: alive
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 28 * 28, 10))
    stats = activations.compute(model, torch.rand(1, 28, 28) + 0.1)
    conv_stats, relu_stats = stats[0]["stats"], stats[1]["stats"]
    assert conv_stats["dead_channels"] == [1, 3] and conv_stats["dead_fraction"] == 0.5
    assert relu_stats["dead_channels"] == [1, 3]
    assert conv_stats["active_fraction"] == pytest.approx(0.5)


def test_input_correlation_of_an_identity_filter_is_one():
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0  # copies the image
        conv.weight[1, 0, 1, 1] = -2.0  # inverted copy: |r| = 1 as well
    image = torch.rand(1, 16, 16)
    (layer,) = activations.compute(nn.Sequential(conv), image)
    assert layer["stats"]["input_corr_max"] == pytest.approx(1.0, abs=1e-5)
    assert layer["stats"]["input_corr_mean"] == pytest.approx(1.0, abs=1e-5)
    maps = torch.rand(1, 3, 16, 16)
    maps[0, 2] = 5.0  # a constant channel has no correlation and is left out of the mean
    corr_max, corr_mean = activations.input_correlation(maps, image[None])
    assert 0 <= corr_mean[0] <= corr_max[0] < 0.5


def test_three_channel_model_and_deepdive_net():
    from deepdive.models import build_model

    torch.manual_seed(0)
    layers = activations.compute(Custom(in_channels=3, size=32).eval(), torch.rand(3, 32, 32))
    assert layers[0]["shape"] == [4, 32, 32] and layers[-1]["shape"] == [10]
    net = build_model("cnn-small", in_channels=3, image_size=32).eval()
    names = [l["name"] for l in activations.compute(net, torch.rand(3, 32, 32))]
    assert names[:3] == ["conv1", "bn1", "act1"] and names[-1] == "fc"
    assert {"conv5", "pool3"} <= set(names) and "norm" not in names  # our Normalize layer is not a shown type


def test_model_without_shown_layers_is_a_clear_error():
    with pytest.raises(DeepdiveError, match="no conv, pool, linear"):
        activations.compute(nn.Sequential(nn.Flatten()), torch.rand(1, 4, 4))
    with pytest.raises(DeepdiveError, match=r"\(C, H, W\)"):
        activations.compute(Custom(), torch.rand(2, 1, 28, 28))


def test_activations_stage_files(tmp_path):
    torch.manual_seed(0)
    model = Custom().eval()
    inputs = torch.rand(20, 1, 28, 28)
    focus = np.array([7, 2, 19, 0, 11])
    summary = activations.activations_stage(model, inputs, focus, tmp_path, batch_size=2)
    out = tmp_path / "activations"
    layers = json.loads((out / "layers.json").read_text())
    assert summary == {"n_focus": 5, "layers": [l["name"] for l in layers]}
    assert [l["name"] for l in layers] == ["conv1", "bn", "act", "pool", "conv2", "pool#2", "head"]
    single = activations.compute(model, inputs[19])
    for k, layer in enumerate(layers):
        data = np.load(out / layer["file"])
        assert layer["file"].startswith(f"{k}_")
        assert data.dtype == np.float16 and data.shape == (5, *layer["shape"])
        np.testing.assert_allclose(data[2].astype(np.float32), single[k]["maps"], rtol=1e-2, atol=1e-2)
    np.testing.assert_array_equal(np.load(out / "focus_index.npy"), focus)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["focus_idx"] == focus.tolist() and set(stats["per_example"]) == {"7", "2", "19", "0", "11"}
    assert stats["per_example"]["19"][0]["active_fraction"] == pytest.approx(single[0]["stats"]["active_fraction"])
    assert len(stats["mean"]) == 7 and 0 <= stats["mean"][0]["active_fraction"] <= 1
    assert stats["mean"][-1]["input_corr_max"] is None


def test_evaluating_restores_mode_flags_and_layout():
    model = Custom().train()
    with activations.evaluating(model, grad=True):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        assert model.conv2.weight.is_contiguous(memory_format=torch.channels_last)  # CPU fast path
        assert torch.is_grad_enabled()
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert model.conv2.weight.is_contiguous()
    model.to(memory_format=torch.channels_last)
    with activations.evaluating(model):
        assert not torch.is_grad_enabled()
    assert model.conv2.weight.is_contiguous(memory_format=torch.channels_last)  # left as the caller had it


def test_one_thread_while_the_machine_is_oversubscribed(monkeypatch):
    model = Custom()
    threads = torch.get_num_threads()
    monkeypatch.setattr(activations.os, "getloadavg", lambda: (100.0, 100.0, 100.0))
    with activations.evaluating(model):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads
    monkeypatch.setattr(activations.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    with activations.evaluating(model):
        assert torch.get_num_threads() == threads
