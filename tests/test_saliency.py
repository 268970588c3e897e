"""Saliency methods (Captum) and their rendering: shapes, signs, completeness, the stage's files, PNG colours."""
import io

import numpy as np
import pytest
import torch
import torch.nn as nn
from captum import attr
from PIL import Image

from deepdive.analysis import render, saliency
from deepdive.errors import DeepdiveError


class SmallCNN(nn.Module):
    """A custom (non-Sequential) classifier, like a user's model."""

    def __init__(self, in_channels=1, size=28, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(16 * (size // 4) ** 2, num_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.head(x.flatten(1))


def linear_model(size=28):
    """Logit 0 = sum(left half) - sum(right half); logit 1 = the reverse. Gradients are known exactly."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(size * size, 2, bias=False))
    w = torch.ones(size, size)
    w[:, size // 2:] = -1
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([w.flatten(), -w.flatten()]))
    return model


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN().eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(6, 1, 28, 28)


@pytest.mark.parametrize("method", saliency.METHODS)
def test_every_method_gives_signed_finite_maps_of_input_shape(cnn, images, method):
    target = torch.arange(6) % 10
    maps = saliency.attribute(cnn, images, target, method)
    assert maps.shape == (6, 28, 28) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert (np.abs(maps).reshape(6, -1).max(1) > 0).all()  # no all-zero map
    assert (maps > 0).any() and (maps < 0).any()  # signed, not absolute values


def test_gradient_is_the_signed_input_gradient(cnn, images):
    target = torch.tensor([3, 1, 4, 1, 5, 9])
    x = images.clone().requires_grad_()
    cnn(x).gather(1, target[:, None]).sum().backward()
    expected = x.grad.sum(1).numpy()
    np.testing.assert_allclose(saliency.attribute(cnn, images, target, "gradient", batch_size=4), expected,
                               rtol=1e-5, atol=1e-7)


def test_known_linear_model_maps():
    model = linear_model()
    x = torch.rand(2, 1, 28, 28)
    target = torch.tensor([0, 1])
    w0 = np.where(np.arange(28) < 14, 1.0, -1.0)[None, :].repeat(28, 0)
    np.testing.assert_allclose(saliency.attribute(model, x, target, "gradient"), np.stack([w0, -w0]), atol=1e-6)
    # IG of a linear model from a zero baseline is exactly input * weight.
    ig = saliency.attribute(model, x, target, "integrated_gradients")
    np.testing.assert_allclose(ig, x[:, 0].numpy() * np.stack([w0, -w0]), atol=1e-5)
    # Occluding the left half lowers logit 0 (positive attribution), the right half raises it (negative).
    occ = saliency.attribute(model, x, target, "occlusion")
    assert (occ[0, :, :12] > 0).all() and (occ[0, :, 16:] < 0).all()
    assert (occ[1, :, :12] < 0).all() and (occ[1, :, 16:] > 0).all()


def test_integrated_gradients_completeness(cnn, images):
    target = torch.tensor([0, 2, 4, 6, 8, 9])
    ig = saliency.IntegratedGradientsMap(cnn, steps=64)
    maps, delta = ig.attribute(images, target, return_convergence_delta=True)
    with torch.no_grad():
        gain = (cnn(images) - cnn(torch.zeros_like(images))).gather(1, target[:, None])[:, 0]
    total = maps.detach().sum((1, 2))
    assert torch.allclose(total, gain, rtol=0.02, atol=0.02 * float(gain.abs().max()))
    assert float(delta.abs().max()) < 0.02 * float(gain.abs().max())


def test_smoothgrad_is_deterministic_and_differs_from_gradient(cnn, images):
    target = torch.zeros(6, dtype=torch.long)
    a = saliency.attribute(cnn, images, target, "smoothgrad")
    b = saliency.attribute(cnn, images, target, "smoothgrad", batch_size=2)
    np.testing.assert_array_equal(a[:2], b[:2])  # same first batch, same noise
    assert not np.allclose(a, saliency.attribute(cnn, images, target, "gradient"))


def test_gradcam_on_a_three_channel_32px_model():
    torch.manual_seed(0)
    model = SmallCNN(in_channels=3, size=32).eval()
    x = torch.rand(4, 3, 32, 32)
    cam = saliency.GradCamMap(model)
    assert cam.layer is model.conv2 and cam.layer_name == "conv2"
    maps = saliency.attribute(model, x, torch.tensor([0, 1, 2, 3]), "gradcam")
    assert maps.shape == (4, 32, 32) and np.isfinite(maps).all() and np.abs(maps).max() > 0


def test_gradcam_of_a_valid_stem_net_sits_on_the_region_its_maps_cover():
    from deepdive.models import Ensemble, build_model

    torch.manual_seed(0)
    net = build_model("cnn-small", stem="single", pool_first=True, stem_padding="valid").eval()
    nn.init.normal_(net.fc.weight)      # a fresh net's classifier is zero: no gradient would reach the maps
    x, target = torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2])
    maps = saliency.attribute(net, x, target, "gradcam")
    layer = saliency.gradcam_layer(net, x[:1])
    raw = attr.LayerGradCam(net, layer).attribute(x, target=target, relu_attributions=False)   # (3, 1, 3, 3)
    inner = attr.LayerAttribution.interpolate(raw, (24, 24), interpolate_mode="bilinear")[:, 0]
    # the 3x3 map is upsampled onto the central 24x24 its cells centre on, not stretched over all 28x28
    np.testing.assert_allclose(maps[:, 2:26, 2:26], inner.detach().numpy(), rtol=1e-5, atol=1e-7)
    ring = np.ones((28, 28), bool)
    ring[2:26, 2:26] = False
    assert np.all(maps[:, ring] == 0) and np.abs(maps[:, 2:26, 2:26]).max() > 0
    # an ensemble's Grad-CAM explains its first member, with that member's margin
    both = saliency.attribute(Ensemble([net, build_model("cnn-small").eval()]), x, target, "gradcam")
    assert np.all(both[:, ring] == 0)
    # a stack5 net (five unpadded 5x5 convs, no pooling) ends on an 8x8 map centred on input pixels 10-17
    stack = build_model("stack5").eval()
    maps = saliency.attribute(stack, x, target, "gradcam")
    assert stack.gradcam_margin == 10
    outside = np.ones((28, 28), bool)
    outside[10:18, 10:18] = False
    assert np.abs(maps[:, 10:18, 10:18]).min() > 0 and not maps[:, outside].any()


class SharedReluNet(nn.Module):
    """One ReLU module reused after every conv, and a BatchNorm after the last conv."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x):
        return self.fc(self.relu(self.bn(self.conv2(self.relu(self.conv1(x))))).flatten(1))


def test_gradcam_reads_the_last_conv_blocks_rectified_output():
    from deepdive.models import build_model

    torch.manual_seed(0)
    net = build_model("cnn-small").train()  # train mode: the forward-order trace must not touch BN statistics
    stats = net.bn5.running_mean.clone()
    x = torch.rand(2, 1, 28, 28)
    assert saliency.gradcam_layer(net) is net.conv5  # without an example: the conv itself
    assert saliency.gradcam_layer(net, x[:1]) is net.act5  # conv5 -> bn5 -> act5
    assert torch.equal(net.bn5.running_mean, stats) and net.training
    cam = saliency.GradCamMap(net.eval())
    cam.attribute(x.clone().requires_grad_(), torch.tensor([0, 1]))
    assert cam.layer_name == "act5"
    shared = SharedReluNet().eval()
    assert saliency.gradcam_layer(shared, x[:1]) is shared.bn  # the shared ReLU runs twice: the block ends before it


def test_gradcam_without_conv_layer_is_a_clear_error():
    with pytest.raises(DeepdiveError, match="Grad-CAM needs a Conv2d"):
        saliency.attribute(linear_model(), torch.rand(2, 1, 28, 28), torch.tensor([0, 1]), "gradcam")


def test_unknown_method_and_bad_shapes_are_clear_errors(cnn, images):
    with pytest.raises(DeepdiveError, match="unknown saliency method"):
        saliency.attribute(cnn, images, torch.zeros(6, dtype=torch.long), "lime")
    with pytest.raises(DeepdiveError, match=r"\(N, C, H, W\)"):
        saliency.attribute(cnn, images[:, 0], torch.zeros(6, dtype=torch.long), "gradient")
    with pytest.raises(DeepdiveError, match="targets"):
        saliency.attribute(cnn, images, torch.zeros(5, dtype=torch.long), "gradient")


def test_model_state_is_restored(images):
    model = SmallCNN().train()
    saliency.attribute(model, images, torch.zeros(6, dtype=torch.long), "gradient")
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_saliency_stage_files(cnn, tmp_path):
    torch.manual_seed(2)
    x = torch.rand(40, 1, 28, 28)
    with torch.no_grad():
        probs = cnn(x).softmax(1).numpy()
    preds = probs.argmax(1)
    labels = preds.copy()
    errors = np.array([3, 17, 30])
    labels[errors] = (preds[errors] + 1) % 10
    summary = saliency.saliency_stage(cnn, x, labels, preds, probs, tmp_path, progress=False,
                                      class_sample={"occlusion": 2, "integrated_gradients": 3, "smoothgrad": 3},
                                      error_cap={"occlusion": 2})
    out = tmp_path / "saliency"
    assert summary["methods"] == list(saliency.METHODS) and summary["n_errors"] == 3
    np.testing.assert_array_equal(np.load(out / "errors_index.npy"), errors)
    rep = np.load(out / "class_rep_index.npy")
    correct = labels == preds
    for c in range(10):
        members = np.flatnonzero(correct & (labels == c))
        assert rep[c] == (members[np.argmax(probs[members, c])] if len(members) else -1)
    grad_mean = None
    for method in saliency.METHODS:
        errs = np.load(out / f"{method}_errors.npy")
        n = 2 if method == "occlusion" else 3  # capped: the first rows of errors_index
        assert errs.shape == (n, 2, 28, 28) and errs.dtype == np.float16 and np.isfinite(errs).all()
        assert summary["errors_computed"][method] == n
        mean = np.load(out / f"{method}_class_mean.npy")
        reps = np.load(out / f"{method}_class_rep.npy")
        assert mean.shape == reps.shape == (10, 28, 28)
        assert summary["seconds"][method] >= 0
        if method == "occlusion":
            direct = saliency.attribute(cnn, x[errors[:2]], labels[errors[:2]], "occlusion")
            np.testing.assert_allclose(errs[:, 1].astype(np.float32), direct, rtol=1e-2, atol=1e-3)
        if method == "gradient":
            grad_mean = mean
            # row k of the errors file: [map for the predicted class, map for the true class]
            direct = saliency.attribute(cnn, x[errors], preds[errors], "gradient")
            np.testing.assert_allclose(errs[:, 0].astype(np.float32), direct, rtol=1e-2, atol=1e-4)
            direct = saliency.attribute(cnn, x[errors], labels[errors], "gradient")
            np.testing.assert_allclose(errs[:, 1].astype(np.float32), direct, rtol=1e-2, atol=1e-4)
    counts = summary["class_sample_counts"]
    full = np.bincount(labels[correct], minlength=10)
    assert counts["gradient"] == full.tolist()
    assert counts["occlusion"] == np.minimum(full, 2).tolist() and summary["class_sample_cap"]["occlusion"] == 2
    # a class mean is the average of its correct examples' maps for the true class
    c = int(np.argmax(full))
    members = np.flatnonzero(correct & (labels == c))
    expected = saliency.attribute(cnn, x[members], np.full(len(members), c), "gradient").mean(0)
    np.testing.assert_allclose(grad_mean[c], expected, rtol=1e-4, atol=1e-6)


def test_shuffled_weights_keep_each_tensors_values_in_another_order(cnn):
    shuffled = saliency.shuffled_weights(cnn)
    before = dict(cnn.named_parameters())
    for name, p in shuffled.named_parameters():
        assert torch.equal(p.detach().flatten().sort().values, before[name].detach().flatten().sort().values)
        assert p.numel() < 3 or not torch.equal(p, before[name])
    assert torch.equal(saliency.shuffled_weights(cnn).conv1.weight, shuffled.conv1.weight)   # seeded
    assert not torch.equal(cnn.conv1.weight, shuffled.conv1.weight)                        # a copy: cnn kept


def test_the_sanity_check_tells_a_map_that_reads_the_model_from_one_that_traces_the_image(tmp_path):
    """On a linear model the gradient toward a class is that class's weights, so shuffling them shuffles the map;
    integrated gradients from a black baseline is input x weights, 0 wherever the input is: on sparse images its
    maps share that zero set under any weights and rank alike, until those pixels are left out."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2))
    x = torch.zeros(20, 1, 28, 28)
    x[:, :, 10:18, 12:16] = torch.rand(20, 1, 8, 4) + 0.5     # ink on a 8x4 patch, the rest 0
    probs = model(x).softmax(1).detach().numpy()
    labels = preds = probs.argmax(1)
    summary = saliency.saliency_stage(model, x, labels, preds, probs, tmp_path, progress=False,
                                      methods=("gradient", "integrated_gradients"))
    sanity = summary["sanity"]
    assert sanity["available"] and sanity["n"] == len(set(labels.tolist()))
    rho, rho_ink = sanity["rank_correlation"], sanity["rank_correlation_nonzero"]
    assert abs(rho["gradient"]) < 0.2 and abs(rho_ink["gradient"]) < 0.5
    assert rho["integrated_gradients"] > 0.5 > rho_ink["integrated_gradients"]
    random = np.load(tmp_path / "saliency" / "gradient_class_random.npy")
    rep = np.load(tmp_path / "saliency" / "class_rep_index.npy")
    c = int(labels[0])
    shuffled = saliency.shuffled_weights(model)
    np.testing.assert_allclose(random[c], saliency.attribute(shuffled, x[rep[c]:rep[c] + 1], [c], "gradient")[0],
                               rtol=1e-5, atol=1e-7)
    assert [r is None for r in sanity["per_class"]["gradient"]] == [int(k) < 0 for k in rep]   # no image, no rho


def test_a_method_failing_on_the_shuffled_model_is_skipped_in_the_check_only(cnn, tmp_path, monkeypatch):
    torch.manual_seed(3)
    x = torch.rand(30, 1, 28, 28)
    probs = cnn(x).softmax(1).detach().numpy()
    preds = probs.argmax(1)
    picky = Picky().eval()                   # the shuffled stand-in refuses passes of more than 20 rows
    monkeypatch.setattr(saliency, "shuffled_weights", lambda model: picky)
    summary = saliency.saliency_stage(cnn, x, preds, preds, probs, tmp_path, progress=False,
                                      methods=("gradient", "smoothgrad"))
    assert summary["methods"] == ["gradient", "smoothgrad"]            # the maps themselves are all there
    sanity = summary["sanity"]
    assert set(sanity["rank_correlation"]) == {"gradient"} and "batch too large" in sanity["skipped"]["smoothgrad"]
    assert not (tmp_path / "saliency" / "smoothgrad_class_random.npy").exists()


def test_saliency_stage_skips_gradcam_without_conv(tmp_path):
    model = linear_model()
    x = torch.rand(8, 1, 28, 28)
    probs = model(x).softmax(1).detach().numpy()
    preds = probs.argmax(1)
    summary = saliency.saliency_stage(model, x, preds, preds, probs, tmp_path, progress=False,
                                      methods=("gradient", "gradcam"))
    assert summary["methods"] == ["gradient"] and "gradcam" in summary["skipped"]
    assert not (tmp_path / "saliency" / "gradcam_errors.npy").exists()
    assert np.load(tmp_path / "saliency" / "gradient_errors.npy").shape == (0, 2, 28, 28)


class Picky(SmallCNN):
    """Refuses batches of more than 20 rows, as a model with a fixed-size buffer might."""

    def forward(self, x):
        if x.shape[0] > 20:
            raise RuntimeError("batch too large")
        return super().forward(x)


def test_a_failing_method_is_reported_and_the_others_still_run(tmp_path):
    torch.manual_seed(0)
    model = Picky().eval()
    x = torch.rand(5, 1, 28, 28)
    probs = model(x).softmax(1).detach().numpy()
    preds = probs.argmax(1)
    summary = saliency.saliency_stage(model, x, preds, preds, probs, tmp_path, progress=False)
    assert summary["methods"] == ["gradient", "gradcam"]  # ≤ 10 rows per pass; the others batch 64 rows
    assert set(summary["skipped"]) == {"smoothgrad", "integrated_gradients", "occlusion"}
    assert all(v == "failed: RuntimeError: batch too large" for v in summary["skipped"].values())


# ---- render ---------------------------------------------------------------------------------------------------

def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_overlay_is_red_where_positive_blue_where_negative_neutral_at_zero():
    image = np.zeros((28, 28), np.uint8)
    image[10:18, 10:18] = 255
    attr = np.zeros((28, 28), np.float32)
    attr[:, :5] = 2.0
    attr[:, -5:] = -2.0
    png = render.overlay_png(image, attr, size=112, scale=1.0)
    px = _pixels(png)
    assert px.shape == (112, 112, 3)  # nearest-neighbour upscale ×4
    red, blue, neutral = px[:, :20], px[:, -20:], px[:, 40:72]
    assert (red[..., 0] > red[..., 1] + 100).all() and (red[..., 0] > red[..., 2] + 100).all()
    assert (blue[..., 2] > blue[..., 0] + 100).all() and (blue[..., 2] > blue[..., 1] + 50).all()
    assert (neutral[..., 0] == neutral[..., 1]).all() and (neutral[..., 1] == neutral[..., 2]).all()
    # the digit is still visible under a neutral attribution: ink and paper differ
    assert px[56, 56, 0] != px[56, 36, 0]


def test_diverging_rgba_scale_and_transparency():
    attr = np.array([[0.0, 0.5, -0.5, 4.0]], np.float32)
    rgba = render.diverging_rgba(attr, scale=1.0)
    assert rgba.dtype == np.uint8 and rgba.shape == (1, 4, 4)
    assert rgba[0, 0, 3] == 0  # no influence: transparent
    assert rgba[0, 1, 3] == rgba[0, 2, 3] == 128  # |attr| / scale
    assert rgba[0, 3, 3] == 255  # clipped at the scale
    assert tuple(rgba[0, 1, :3]) == tuple(render.POSITIVE.astype(int))
    assert tuple(rgba[0, 2, :3]) == tuple(render.NEGATIVE.astype(int))


def test_shared_scale_makes_maps_comparable():
    small, big = np.full((4, 4), 0.1, np.float32), np.full((4, 4), 1.0, np.float32)
    scale = render.shared_scale(small, big, percentile=100)
    assert scale == pytest.approx(1.0)
    assert render.diverging_rgba(small, scale)[0, 0, 3] < render.diverging_rgba(big, scale)[0, 0, 3]
    assert render.shared_scale(np.zeros((3, 3))) == 1.0  # an all-zero map still gets a usable scale


def test_colorbar_has_blue_white_red_and_labels():
    px = _pixels(render.colorbar_png(0.25, width=200, height=40))
    assert px.shape == (40, 200, 3)
    left, middle, right = px[5, 2], px[5, 100], px[5, 197]
    assert left[2] > left[0] + 100 and right[0] > right[2] + 100 and (middle > 240).all()
    assert (px[25:, :].min(axis=2) < 128).any()  # dark label text under the bar


def test_grid_png_layout_and_per_map_normalisation():
    maps = np.stack([np.tile(np.linspace(0, 1, 6), (6, 1)), np.tile(np.linspace(0, 100, 6), (6, 1)),
                     np.full((6, 6), 3.0)])
    px = _pixels(render.grid_png(maps, cols=3, zoom=4, pad=2))
    assert px.shape == (2 + 24 + 2, 2 + 3 * (24 + 2), 3)
    first, second = px[2:26, 2:26], px[2:26, 28:52]
    np.testing.assert_array_equal(first, second)  # each map normalised to its own range
    assert tuple(first[0, 0]) == (68, 1, 84) and tuple(first[0, -1]) == (253, 231, 37)  # viridis ends
    assert (px[2:26, 54:78] == (68, 1, 84)).all()  # a constant map: lowest colour
    vector = _pixels(render.grid_png(np.arange(10, dtype=np.float32)))  # a linear layer's units
    assert vector.shape[0] == vector.shape[1]
