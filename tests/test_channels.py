"""The last conv block's channels (deepdive.analysis.channels): the stored top images, class shares and the errors'
contributions of the analysed tiny run of tests/conftest.py, checked against a direct computation."""
import numpy as np
import pytest
import torch

from deepdive.analysis.channels import ChannelContributions, channel_means, head_input_layer, other_class
from deepdive.analysis.embedding import final_linear
from deepdive.models import load_checkpoint


@pytest.fixture(scope="module")
def model(analyzed_run):
    return load_checkpoint(analyzed_run.run_dir / "model_best.pt", device="cpu")


def inputs(res, rows=None):
    images = res.images if rows is None else res.images[rows]
    return torch.from_numpy(np.asarray(images, np.float32)[:, None] / 255)


def test_the_weighing_class_is_the_label_of_an_error_and_the_runner_up_of_a_right_answer():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.1, 0.4]])
    assert other_class(probs, [0, 1, 2]).tolist() == [1, 1, 2]   # right: runner-up; wrong: its label


def test_stored_channels_are_the_models(res, model):
    info = res.summary["channels"]
    ch = res.channels()
    layer = head_input_layer(model, inputs(res, [0]))
    assert info["available"] and info["layer"] == next(n for n, m in model.named_modules() if m is layer)
    assert isinstance(layer, torch.nn.ReLU)    # the last block's output, which the head flattens
    means = channel_means(model, layer, inputs(res))
    k = info["channels"]
    assert means.shape == (len(res.images), k) and ch["top_rows"].shape == (k, info["top"])
    for c in (0, k - 1):   # the rows that excite the channel most, most first
        np.testing.assert_allclose(means[ch["top_rows"][c], c], np.sort(means[:, c])[::-1][:info["top"]], rtol=1e-4)
    # each class's share of a channel: its mean (rectified) activation over the class's images, normalised
    labels = res.examples["true"].to_numpy()
    fired = np.clip(means, 0, None)
    want = np.stack([fired[labels == c].mean(0) for c in range(res.num_classes)], axis=1)
    np.testing.assert_allclose(ch["class_share"], want / want.sum(1, keepdims=True), rtol=1e-3, atol=1e-6)

    # each error's contributions: prediction over label, summed they are the two scores' difference (to first order)
    frame = res.examples
    rows = np.asarray(ch["errors_index"])
    assert rows.tolist() == res.summary["focus"]["errors"]
    pred, true = frame["pred"].to_numpy()[rows], frame["true"].to_numpy()[rows]
    again = ChannelContributions(model, layer).attribute(inputs(res, rows), pred, true)
    np.testing.assert_allclose(np.asarray(ch["errors"]), again, rtol=1e-4, atol=1e-5)
    # our head is linear: the contributions add up to the two scores' difference less the two biases
    with torch.no_grad():
        logits = model.eval()(inputs(res, rows)).numpy()
    bias = final_linear(model, inputs(res, [0])).bias.detach().numpy()
    k = np.arange(len(rows))
    gap = logits[k, pred] - logits[k, true] - (bias[pred] - bias[true])
    np.testing.assert_allclose(again.sum(1), gap, rtol=1e-3, atol=1e-3)
    assert 0.5 < info["completeness"] < 1.5
    # the channels that lead the most errors, as the CLI names them
    lead = np.bincount(again.argmax(1), minlength=info["channels"])
    assert [c["channel"] for c in info["leading"]] == np.argsort(-lead, kind="stable")[:len(info["leading"])].tolist()
    assert [c["errors"] for c in info["leading"]] == sorted(lead, reverse=True)[:len(info["leading"])]
    from deepdive.analysis.cli import text_summary

    line = next(x for x in text_summary(res.summary, "ws").splitlines() if x.startswith("features behind"))
    first = info["leading"][0]
    assert f"({info['layer']}, {info['channels']} channels; they carry " in line
    plural = "s" if first["errors"] != 1 else ""
    assert f": channel {first['channel']} leads {first['errors']} error{plural} (fires most for " in line


def test_the_served_channels_of_an_error_and_of_a_right_answer(analyzed_run, res, model):
    from fastapi.testclient import TestClient

    from deepdive.analysis.channels import strongest
    from deepdive.web.app import create_app

    ch, frame = res.channels(), res.examples
    base = f"/api/runs/{analyzed_run.run_id}/splits/test/channels"
    layer = head_input_layer(model, inputs(res, [0]))
    with TestClient(create_app(analyzed_run.workspace)) as client:
        row = int(ch["errors_index"][0])                       # stored
        body = client.get(f"{base}/{row}").json()
        want = strongest(ch["errors"][0])
        assert (body["toward"], body["against"], body["other"]) == (want["toward"], want["against"],
                                                                    int(frame["true"][row]))
        assert set(body["maps"]) == {str(k) for k, _ in want["toward"] + want["against"]}
        assert all(uri.startswith("data:image/png;base64,") for uri in body["maps"].values())

        row = int(np.flatnonzero(frame["correct"].to_numpy())[0])   # computed: against the runner-up
        body = client.get(f"{base}/{row}").json()
        probs = frame[[f"p{c}" for c in range(res.num_classes)]].to_numpy()[row]
        runner = int(np.argsort(probs)[-2])
        again = ChannelContributions(model, layer).attribute(inputs(res, [row]), [frame["pred"][row]], [runner])[0]
        assert body["other"] == runner and body["toward"] == strongest(again)["toward"]
        assert client.get(f"{base}/{len(frame)}").status_code == 404


def test_the_channels_table_lists_each_errors_channels_strongest_first(res, tmp_path):
    from deepdive.analysis.export import export_table, table

    t = table(res, "channels")
    ch = res.channels()
    k = res.summary["channels"]["channels"]
    assert len(t) == len(ch["errors_index"]) * k
    first = t[t["row"] == int(ch["errors_index"][0])]
    assert first["rank"].tolist() == list(range(1, k + 1)) and first["contribution"].is_monotonic_decreasing
    assert first["channel"].iloc[0] == int(np.argmax(ch["errors"][0]))
    assert set(first["channel"]) == set(range(k))
    out = export_table(res, "channels", tmp_path / "channels.csv")
    assert out.read_text().splitlines()[0].startswith("row,idx,true,pred,rank,channel,contribution")
