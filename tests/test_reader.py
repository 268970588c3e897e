"""deepdive.open_run: a run's stored deep dive read from Python, as a notebook would."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

import deepdive
from deepdive.analysis import export
from deepdive.analysis.reader import RunAnalysis
from deepdive.errors import DeepdiveError, RunError
from deepdive.store import Store


@pytest.fixture(scope="module")
def dive(analyzed_run, copy_workspace, tmp_path_factory):
    """The analysed tiny run, read from a copy of its workspace (reviews are written into it)."""
    ws = copy_workspace(analyzed_run.workspace, tmp_path_factory.mktemp("reader") / "ws")
    return deepdive.open_run(analyzed_run.run_id[:10], workspace=ws)


def test_open_run_reads_the_tables_export_writes(dive, analyzed_run, res):
    assert (dive.id, dive.split, dive.class_names) == (analyzed_run.run_id, "test", res.class_names)
    assert dive.summary == res.summary and repr(dive).endswith(f"{res.summary['error_count']} errors of 1000>")
    for name in ("predictions", "errors", "per-class", "label-issues", "dynamics"):
        assert dive.table(name).equals(export.table(res, name))
    with pytest.raises(DeepdiveError, match="unknown table 'nope'"):
        dive.table("nope")
    with pytest.raises(RunError, match="no analysis of its 'val' split"):
        deepdive.open_run(analyzed_run.run_id, workspace=dive.workspace, split="val")


def test_the_tables_carry_peoples_verdicts(dive):
    row = int(dive.table("errors")["row"].iat[0])
    with Store.open(dive.workspace, create=False) as store:
        idx = int(dive.result.examples["idx"].iat[row])
        store.set_label_review("mnist", "test", idx, int(dive.result.examples["true"].iat[row]), "ambiguous",
                               run_id=dive.id)
    reviews = dive.table("reviews")
    assert reviews[["row", "verdict"]].values.tolist() == [[row, "ambiguous"]]


def test_epochs_model_and_pictures(dive, analyzed_run, res):
    epochs = dive.epochs
    assert epochs["epoch"].tolist() == [e["epoch"] for e in analyzed_run.store.epochs(analyzed_run.run_id)]
    assert {"val_acc", "train_loss", "seconds", "system/cpu_percent", "system/peak_rss_mb"} <= set(epochs.columns)
    pd.testing.assert_frame_equal(dive.table("epochs"), epochs)     # as `deepdive export RUN epochs` writes it
    assert dive.steps.columns.tolist() == ["step", "epoch", "lr", "train_acc", "train_loss", "train_seconds"]
    assert len(dive.steps) > 2
    pd.testing.assert_frame_equal(dive.table("steps"), dive.steps)
    model = dive.model()
    rows = dive.table("errors")["row"].to_numpy()[:4]
    with torch.no_grad():
        x = torch.from_numpy(dive.images[rows]).float().div(255).unsqueeze(1)
        probs = torch.softmax(model(x).float(), 1).numpy()
    stored = res.examples[[f"p{c}" for c in range(10)]].to_numpy()[rows]
    np.testing.assert_allclose(probs, stored, atol=2e-2)   # bf16 on the CPU where it was evaluated
    grid = np.asarray(dive.pictures(list(rows) + [0, 1], columns=3, scale=2))
    assert grid.shape == (2 * (56 + 28 + 4), 3 * (56 + 4), 3)
    red = (grid[..., 0] > 150) & (grid[..., 1] < 80)      # an error's caption
    assert red.any()
    with pytest.raises(DeepdiveError, match="rows in 0..999"):
        dive.pictures([1000])


def test_long_class_names_are_cut_to_their_picture(dive, monkeypatch):
    """Captions wider than their picture end in an ellipsis instead of running over the next one: the white
    columns between the pictures stay white under them too; an error's confidence is kept whole."""
    from PIL import Image, ImageDraw, ImageFont

    names = [f"a very long name for the class of digit {c}" for c in range(10)]
    monkeypatch.setitem(dive.result.summary, "class_names", names)
    rows = dive.table("errors")["row"].to_numpy()[:3]
    grid = np.asarray(dive.pictures(rows, columns=3, scale=2).convert("L"))
    captions = grid[56 + 2:]                                   # under the pictures (tiles 56 px, 4 px apart)
    for k in range(2):
        assert (captions[:, k * 60 + 58:k * 60 + 62] == 255).all()
    sheet = np.asarray(dive.explain(int(rows[0]), methods=("gradient",), size=56).convert("L"))
    assert (sheet[56 + 5:, 59:65] == 255).all()              # between the image's caption and the next map's
    from deepdive.analysis.reader import _fit_text

    draw, font = ImageDraw.Draw(Image.new("RGB", (10, 10))), ImageFont.load_default(size=11)
    cut = _fit_text(draw, names[3], font, 80)
    assert cut.endswith("…") and names[3].startswith(cut[:-1]) and draw.textlength(cut, font=font) <= 80
    assert _fit_text(draw, "7", font, 80) == "7"


def test_a_notebook_shows_the_headline_numbers_escaped(dive):
    page = RunAnalysis(dataclasses.replace(dive.record, name="<img src=x onerror=alert(1)>"), dive.result,
                       dive.workspace)._repr_html_()
    assert "<img" not in page and "&lt;img src=x" in page
    assert f"{dive.summary['accuracy']:.2%}" in page and "label-issues" in page
    behind = dive.summary["influence"]["behind"][0]
    assert f"#{behind[0]} (" in page and "table('influence')" in page
    assert f"{dive.summary['slices']['found']} of {dive.summary['slices']['tested']:,} slices found" in page


def test_saliency_is_the_analysis_own_where_kept_else_computed_alike(dive, res):
    from deepdive.analysis.saliency import attribute

    row = int(dive.table("errors")["row"].iat[0])
    pred, true = int(res.examples["pred"].iat[row]), int(res.examples["true"].iat[row])
    stored = dive.saliency(row, "gradient")                                   # toward the answer: stored
    np.testing.assert_array_equal(stored, res.stored_saliency("gradient", row, pred))
    fresh = attribute(dive.model(), res.inputs([row]), [pred], "gradient")[0]
    np.testing.assert_allclose(fresh, stored, rtol=1e-3, atol=1e-3 * np.abs(stored).max())
    other = next(c for c in range(10) if c not in (pred, true))
    assert res.stored_saliency("gradient", row, other) is None
    computed = dive.saliency(row, "gradient", other)                         # not kept: computed
    assert computed.shape == (28, 28) and np.abs(computed).max() > 0
    sheet = dive.explain(row, methods=("gradient", "occlusion"), size=56)
    assert sheet.size == (5 * (56 + 6), 56 + 34)                 # the image, then 2 methods x (answer, label)
    assert dive.explain(int(np.flatnonzero(res.examples["correct"])[0]), methods=("gradient",)).size[0] == 2 * 118
    with pytest.raises(DeepdiveError, match="unknown saliency method 'lime'"):
        dive.saliency(row, "lime")
    with pytest.raises(DeepdiveError, match="row must be in 0..999"):
        dive.explain(1000)


def test_a_notebook_says_what_fools_the_model(dive):
    adv = next(f for f in dive.summary["robustness"]["families"] if f["id"] == "adversarial")
    page = dive._repr_html_()
    if adv["median"] is None:        # a tiny run nothing flips within range: the line is left out
        assert "what fools it" not in page
    else:
        assert f"flip by ε∞ {adv['median']:.3g}" in page and "table('robustness')" in page
