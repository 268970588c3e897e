"""A new picture through a run's model (deepdive.analysis.probe, the served Try view's API): an analysed image sent
back as a picture gets exactly its analysed answers; drawings are prepared like MNIST digits; bad pictures are
refused with the reason."""
import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import deepdive  # noqa: E402
from deepdive.analysis.probe import probe  # noqa: E402
from deepdive.analysis.results import AnalysisResult  # noqa: E402
from deepdive.data.images import prepare_digit  # noqa: E402
from deepdive.models import load_checkpoint  # noqa: E402
from deepdive.web.app import create_app  # noqa: E402


def probs(result, row):
    """The analysis's stored class probabilities of one row."""
    frame = result.examples
    return frame[[f"p{c}" for c in range(result.num_classes)]].to_numpy()[row]


def data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def canvas(picture: np.ndarray, zoom=10) -> Image.Image:
    """What the Try view's canvas holds for an analysed image: its pixels scaled up, on an RGBA canvas."""
    h, w = picture.shape[:2]
    return Image.fromarray(picture).resize((w * zoom, h * zoom), Image.Resampling.NEAREST).convert("RGBA")


def decode(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


@pytest.fixture(scope="module")
def url(analyzed_run):
    return f"/api/runs/{analyzed_run.run_id}/splits/test/probe"


def test_the_probe_gives_an_analysed_image_its_stored_maps(analyzed_run, res):
    model = load_checkpoint(analyzed_run.run_dir / "model_best.pt", device="cpu")
    sal = res.saliency("gradient")
    k, row = 0, int(sal["errors_index"][0])
    frame = res.examples
    pred, true = int(frame["pred"][row]), int(frame["true"][row])
    out = probe(model, res.images[row][None] / np.float32(255), res.num_classes, "gradient", [true])
    np.testing.assert_allclose(out.probs, probs(res, row), atol=1e-5)
    assert list(out.maps) == [pred, true]   # the prediction's map first, then the asked-for class's
    # stored as float16: equal to its precision
    np.testing.assert_allclose(out.maps[pred], sal["errors"][k, 0], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(out.maps[true], sal["errors"][k, 1], rtol=1e-3, atol=1e-5)
    assert [layer["name"] for layer in out.layers] == [layer["name"] for layer in res.activations()["layers"]]
    assert probe(model, res.images[row][None] / np.float32(255), res.num_classes).maps == {}


def test_what_the_try_view_is_told_about_the_run(client, url):
    info = client.get(url).json()
    assert info == {"available": True, "reason": "", "channels": 1, "height": 28, "width": 28, "digit": True,
                    "digit_default": True, "neighbours": True, "influence": True}


def test_the_training_images_behind_a_pictures_answer(client, url, res):
    """An error sent as a picture, with the class it should be: the training images against that label are the
    ones its analysis stored (TracIn, deepdive.analysis.influence); without one, those behind its answer."""
    inf = res.influence()
    row, frame = int(inf["rows"][0]), res.examples
    true, pred = int(frame["true"][row]), int(frame["pred"][row])
    picture = data_uri(canvas(res.images[row]))
    body = client.post(f"{url}/influence", json={"image": picture, "expected": true}).json()
    assert (body["label"], body["pred"]) == (true, pred)
    assert [item["idx"] for item in body["against"]] == inf["against_index"][0].tolist()
    assert [item["idx"] for item in body["for"]] == inf["for_index"][0].tolist()
    np.testing.assert_allclose([item["score"] for item in body["against"]], inf["against_score"][0], rtol=1e-3)
    answer = client.post(f"{url}/influence", json={"image": picture}).json()
    assert answer["label"] == pred and [item["score"] for item in answer["for"]] == \
        sorted((item["score"] for item in answer["for"]), reverse=True)
    assert client.post(f"{url}/influence", json={"image": picture, "expected": 99}).status_code in (404, 422)


def test_what_fools_a_picture(client, url, res):
    """An error sent as a picture with the class it should be: the smallest changes that make it right are its
    analysis' (deepdive.analysis.robustness; the same search, one picture instead of a batch); without it, those
    that change its answer."""
    from deepdive.analysis.robustness import FAMILY_IDS

    table = res.robustness()
    row = int(table[table["mending"]]["row"].iat[0])
    frame = res.examples
    true, pred = int(frame["true"][row]), int(frame["pred"][row])
    picture = data_uri(canvas(res.images[row]))
    body = client.post(f"{url}/robustness", json={"image": picture, "expected": true}).json()
    assert (body["label"], body["pred"], body["mending"]) == (true, pred, True)
    assert [f["id"] for f in body["families"]] == list(FAMILY_IDS)
    stored = table[table["row"] == row].set_index("family")
    for f in body["families"]:
        want = float(stored.loc[f["id"], "size"])
        if f["id"] == "adversarial":      # a batch of one: the same search, float sums in another order
            assert f["size"] is not None and abs(f["size"] - want) <= 0.01
        else:
            assert (f["size"] is None and np.isnan(want)) or f["size"] == pytest.approx(want)
            assert f["variant"] == stored.loc[f["id"], "variant"]
        assert f["into"] in (true, -1) and decode(f["image"]).shape == res.images[row].shape
        assert f["holds"].startswith("holds ")
    answer = client.post(f"{url}/robustness", json={"image": picture}).json()
    assert answer["label"] == pred and not answer["mending"]
    assert all(f["into"] != pred for f in answer["families"] if f["size"] is not None)
    assert client.post(f"{url}/robustness", json={"image": picture, "expected": 99}).status_code in (404, 422)


def test_an_analysed_image_sent_as_a_picture_gets_its_analysed_answer(client, url, res, analyzed_run):
    row = int(res.saliency("gradient")["errors_index"][0])
    frame = res.examples
    body = client.post(url, json={"image": data_uri(canvas(res.images[row])), "method": "gradient",
                                  "expected": int(frame["true"][row])}).json()
    np.testing.assert_array_equal(decode(body["picture"]), res.images[row])
    np.testing.assert_allclose(body["probs"], probs(res, row), atol=1e-5)
    assert body["pred"] == frame["pred"][row] and body["method"] == "gradient"
    assert [m["target"] for m in body["maps"]] == [frame["pred"][row], frame["true"][row]]
    assert all(decode(m["image"]).shape[:2] == (112, 112) for m in body["maps"])
    assert [layer["name"] for layer in body["layers"]] == [layer["name"] for layer in res.activations()["layers"]]

    # the channels behind its answer, weighed against the class it should be: as the detail panel has them
    stored = client.get(url.replace("/probe", f"/channels/{row}")).json()
    assert body["channels"]["other"] == stored["other"] == frame["true"][row]
    for side in ("toward", "against"):
        assert [k for k, _ in body["channels"][side]] == [k for k, _ in stored[side]]
        np.testing.assert_allclose([v for _, v in body["channels"][side]], [v for _, v in stored[side]], atol=2e-3)
    assert set(body["channels"]["maps"]) == set(stored["maps"])

    # the advice's perturbations of it, each answered: as the advice's probes see them (pixels / 255 here)
    from deepdive.analysis.advice import PERTURBATIONS

    assert [v["id"] for v in body["perturbed"]] == [p.id for p in PERTURBATIONS if p.id != "none"]
    model = load_checkpoint(analyzed_run.run_dir / "model_best.pt", device="cpu")
    x = torch.from_numpy(res.images[row] / np.float32(255))[None, None]
    for v, p in zip(body["perturbed"], [p for p in PERTURBATIONS if p.id != "none"]):
        with torch.no_grad():
            want = torch.softmax(model(p.apply(x).clamp(0, 1)), 1)[0].numpy()
        np.testing.assert_allclose(v["probs"], want, atol=1e-5, err_msg=v["id"])
    shifted = dict((v["id"], decode(v["image"])) for v in body["perturbed"])["shift+x"]
    np.testing.assert_array_equal(shifted[:, 2:], res.images[row][:, :-2])   # 2 px to the right, black comes in
    assert not shifted[:, :2].any()

    got = client.post(f"{url}/neighbours", json={"image": data_uri(canvas(res.images[row]))}).json()
    stored = res.neighbours()
    assert [item["idx"] for item in got["items"]][:7] == stored["index"][row][:7].tolist()
    np.testing.assert_allclose([item["similarity"] for item in got["items"]], stored["similarity"][row], atol=1e-4)
    assert [item["label"] for item in got["items"]][:7] == stored["label"][row][:7].tolist()
    assert got["reference"] == "mnist training images"


def test_a_drawing_is_prepared_like_an_mnist_digit(client, url, analyzed_run):
    page = Image.new("RGB", (200, 300), "white")   # a thick dark 7 on white paper, off-centre
    ImageDraw.Draw(page).line([(50, 60), (150, 60), (80, 250)], fill="black", width=28, joint="curve")
    body = client.post(url, json={"image": data_uri(page), "digit": True}).json()
    digit = prepare_digit(page)
    np.testing.assert_array_equal(decode(body["picture"]), digit)
    model = load_checkpoint(analyzed_run.run_dir / "model_best.pt", device="cpu")
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(digit / np.float32(255))[None, None]), 1)[0].numpy()
    np.testing.assert_allclose(body["probs"], expected, atol=1e-5)
    assert body["maps"] == []   # no method asked for


@pytest.mark.parametrize("body, status, message", [
    ({"image": "hello"}, 422, "must be a data URI"),
    ({"image": "data:image/png;base64,@@@"}, 422, "does not decode"),
    ({"image": "data:image/png;base64," + base64.b64encode(b"not a png").decode()}, 422, "not a readable image"),
    ({"image": data_uri(Image.new("L", (280, 280))), "digit": True}, 422, "no digit found"),
    ({"image": data_uri(Image.new("1", (5000, 4000)))}, 422, "5000×4000 pixels; at most 16,777,216"),   # ~3 kB
    ({"image": data_uri(Image.new("L", (280, 280))), "method": "nosuch"}, 404, "no 'nosuch' saliency"),
    ({"image": data_uri(Image.new("L", (280, 280))), "expected": 10}, 404, "class 10 is outside"),
])
def test_a_bad_picture_is_refused_with_the_reason(client, url, body, status, message):
    r = client.post(url, json=body)
    assert r.status_code == status and message in r.json()["detail"], r.text


def test_a_logged_models_normalised_inputs_are_rebuilt_from_the_picture(tmp_path):
    """log_evaluation of a net on normalised RGB inputs: the Try view's picture goes back through the inverse of
    the display's scale, so a shown image sent back gets the stored answer."""
    torch.manual_seed(0)
    from tests.test_api import TinyNet

    g = torch.Generator().manual_seed(3)
    pixels = torch.randint(0, 256, (40, 3, 12, 10), generator=g, dtype=torch.uint8)
    pixels[0], pixels[1] = 0, 255                                  # each channel's range is there, as in real sets
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    images = (pixels / 255.0 - mean[:, None, None]) / std[:, None, None]
    labels = torch.randint(0, 5, (40,), generator=g)
    run = deepdive.log_evaluation(TinyNet(), (images, labels), class_names=list("abcde"), workspace=tmp_path,
                                  name="normalised", progress=False)
    shown = AnalysisResult.load(run.run_dir, "test")
    with TestClient(create_app(tmp_path)) as c:
        url = f"/api/runs/{run.id}/splits/test/probe"
        info = c.get(url).json()
        assert (info["available"], info["channels"], info["height"], info["width"]) == (True, 3, 12, 10)
        assert not info["digit"] and not info["neighbours"]
        for row in (2, 7):
            body = c.post(url, json={"image": data_uri(canvas(shown.images[row]))}).json()
            np.testing.assert_allclose(body["probs"], probs(shown, row), atol=1e-5)
        # a perturbation acts on the picture as shown: the shift brings in the shown background (black), which
        # is the normalised inputs' minimum, not 0
        from deepdive.analysis import display_scale
        from deepdive.train import augment

        low, span = (torch.from_numpy(v)[None, :, None, None] for v in display_scale(images.numpy()))
        picture = torch.from_numpy(shown.images[7].transpose(2, 0, 1) / np.float32(255))[None]
        model = load_checkpoint(run.run_dir / "model_best.pt", device="cpu")
        with torch.no_grad():
            want = torch.softmax(model(low + span * augment.shift(picture, 2, 0)), 1)[0].numpy()
        got = dict((v["id"], v["probs"]) for v in body["perturbed"])["shift+x"]
        np.testing.assert_allclose(got, want, atol=1e-5)
        r = c.post(url, json={"image": data_uri(canvas(shown.images[2])), "digit": True})
        assert r.status_code == 422 and "28x28 one-channel" in r.json()["detail"]
        r = c.post(f"{url}/neighbours", json={"image": data_uri(canvas(shown.images[2]))})
        assert r.status_code == 404 and "no training images" in r.json()["detail"]
