"""The full `analyze` on the analyzed_run fixture: every output of DESIGN.md exists and fits together; export
round-trips; a failing re-analysis leaves the stored one intact."""
import json

import numpy as np
import pandas as pd
import pytest
import torch.nn as nn

from deepdive import analysis
from deepdive.analysis import advice, export
from deepdive.analysis.results import AnalysisResult
from deepdive.analysis.saliency import METHODS
from deepdive.errors import DeepdiveError, RunError

EXAMPLE_COLUMNS = ["idx", "true", "pred", "confidence", "margin", "loss", "correct", "entropy", "label_issue",
                   "label_quality", "suggested_label", "category", "emb_x", "emb_y"]


@pytest.fixture(scope="module")
def result(analyzed_run):
    return AnalysisResult.load(analyzed_run.run_dir, "test")


def test_every_output_file_exists(analyzed_run):
    folder = analyzed_run.run_dir / "analysis" / "test"
    expected = ["summary.json", "images.npy", "examples.parquet", "label_issues.parquet", "advice.json",
                "saliency/errors_index.npy", "saliency/class_rep_index.npy", "activations/layers.json",
                "activations/stats.json"]
    expected += [f"saliency/{m}_{part}.npy" for m in METHODS for part in ("errors", "class_mean", "class_rep")]
    missing = [name for name in expected if not (folder / name).is_file()]
    assert not missing
    layers = json.loads((folder / "activations" / "layers.json").read_text())
    assert layers and all((folder / "activations" / layer["file"]).is_file() for layer in layers)
    leftovers = [p.name for p in folder.parent.iterdir() if p.name != "test"]
    assert not [name for name in leftovers if name.startswith("test.")]  # no tmp/old folders left behind


def test_the_advice_shows_images_its_probes_break(result):
    """Each suggestion's examples are images the model gets right unperturbed, with their picture as probed: the
    same size as the split's images and not the unperturbed image."""
    ex, pictures = result.examples, result.advice_pictures
    examples = [e for s in result.advice["suggestions"] for e in s["examples"]]
    assert examples and pictures.dtype == np.uint8 and pictures.shape == (len(examples), 28, 28)
    for s in result.advice["suggestions"]:
        assert len(s["examples"]) <= min(s["broken"], advice.EXAMPLES_PER_SUGGESTION)
        assert {e["probe"] for e in s["examples"]} <= set(s["evidence"]["probes"])
    for e in examples:
        assert ex.loc[e["row"], "correct"] and e["pred"] != ex.loc[e["row"], "true"]
        assert not np.array_equal(pictures[e["image"]], result.images[e["row"]])


def test_examples_images_and_predictions_agree(analyzed_run, result, mnist):
    s, ex = result.summary, result.examples
    n = s["n"]
    assert n == len(ex) == len(result.images) == 1000  # tiny_run evaluates the first 1000 test images
    assert all(col in ex.columns for col in EXAMPLE_COLUMNS)
    assert [f"p{c}" for c in range(10)] == [c for c in ex.columns if c.startswith("p") and c[1:].isdigit()]
    assert result.images.dtype == np.uint8 and result.images.shape == (n, 28, 28)
    np.testing.assert_array_equal(result.images, mnist.test_images[:n])
    np.testing.assert_array_equal(ex["idx"], np.arange(n))
    np.testing.assert_array_equal(ex["true"], mnist.test_labels[:n])
    # the stored predictions were used, unchanged
    stored = analyzed_run.store.predictions(analyzed_run.run_id, "test")
    assert s["data_source"] == "stored predictions"
    np.testing.assert_allclose(ex[[f"p{c}" for c in range(10)]].to_numpy(), stored["probs"], atol=1e-6)
    probs = ex[[f"p{c}" for c in range(10)]].to_numpy()
    np.testing.assert_array_equal(ex["pred"], probs.argmax(1))
    np.testing.assert_array_equal(ex["correct"], ex["true"] == ex["pred"])
    assert ((ex["category"] == "correct") == ex["correct"]).all()
    assert np.isfinite(ex[["emb_x", "emb_y"]].to_numpy()).all()


def test_summary_tables_are_consistent(analyzed_run, result):
    s, ex = result.summary, result.examples
    n, errors = s["n"], int((~ex["correct"]).sum())
    run = analyzed_run.store.get_run(analyzed_run.run_id)
    assert s["error_count"] == errors
    assert s["accuracy"] == pytest.approx(run.test_accuracy) == pytest.approx(ex["correct"].mean())
    counts = np.array(s["confusion"]["counts"])
    assert counts.sum() == n and np.trace(counts) == n - errors
    np.testing.assert_allclose(np.array(s["confusion"]["normalized"]).sum(1)[counts.sum(1) > 0], 1.0, atol=1e-5)
    assert sum(row["support"] for row in s["per_class"]) == n
    for row in s["per_class"]:
        rows = row["error_rows"]
        assert len(rows) == row["errors"] and (ex.loc[rows, "true"] == row["class"]).all()
        assert ex.loc[rows, "confidence"].is_monotonic_decreasing
    for pair in s["top_confusions"]:
        sel = ex[(ex["true"] == pair["true"]) & (ex["pred"] == pair["pred"])]
        assert pair["count"] == len(sel) and sorted(pair["indices"]) == sorted(sel.index)
    assert sum(s["taxonomy"]["total"].values()) == errors
    # the ranking: top-1 is the accuracy; each class's AP in its row and on its curve, which ends at recall 1
    top = {t["k"]: t["accuracy"] for t in s["ranking"]["top_k"]}
    assert top[1] == pytest.approx(s["accuracy"]) and top[1] <= top[2] <= top[3] <= top[5]
    assert top[2] == pytest.approx(((ex["true"] == ex["pred"]) | (ex["true"] == second_choice(ex))).mean())
    curves = s["ranking"]["pr_curves"]
    assert [row["ap"] for row in s["per_class"]] == [cv["ap"] for cv in curves]
    assert all(0 < cv["ap"] <= 1 and cv["points"][-1][0] == 1 for cv in curves)
    assert s["macro"]["ap"] == pytest.approx(s["ranking"]["mean_ap"])
    assert s["taxonomy"]["thresholds"] == {"entropy": 0.3, "margin": 0.4}
    assert s["label_issues"]["count"] == len(result.label_issues) == int(ex["label_issue"].sum())
    assert set(s["stage_seconds"]) == set(analysis.STAGES)
    assert s["insight"]["epochs_total"] == len(analyzed_run.store.epochs(analyzed_run.run_id))
    # the model's layers, as the Activations view names them, and every parameter the run counted
    arch = s["architecture"]
    assert arch["total_params"] == analyzed_run.store.get_run(analyzed_run.run_id).num_params and not arch["other_params"]
    shown = {layer["name"] for layer in arch["layers"]}
    assert set(s["activations"]["layers"]) <= shown and arch["layers"][-1]["output"] == [10]
    stored = analyzed_run.store.analysis(analyzed_run.run_id, "test")
    assert stored["summary"] == s and stored["stage_seconds"] == s["stage_seconds"]


def second_choice(ex):
    probs = ex[[f"p{c}" for c in range(10)]].to_numpy()
    return np.argsort(-probs, axis=1, kind="stable")[:, 1]


def test_saliency_and_activations_cover_the_focus_set(result):
    ex, s = result.examples, result.summary
    errors = ex.index[~ex["correct"]]
    focus = result.focus_indices
    assert len(focus) == len(set(focus.tolist())) == len(s["focus"]["indices"])
    for method in METHODS:
        sal = result.saliency(method)
        idx = np.asarray(sal["errors_index"])
        assert sal["errors"].shape == (len(idx), 2, 28, 28) and sal["errors"].dtype == np.float16
        assert sal["class_mean"].shape == sal["class_rep"].shape == (10, 28, 28)
        assert set(idx.tolist()) <= set(errors.tolist())
        # maps exist for the most confident errors first
        assert idx.tolist() == s["focus"]["errors"][:len(idx)]
    # the sanity check drew every method's class representatives again with the weights shuffled
    sanity = s["saliency"]["sanity"]
    assert sanity["available"] and set(sanity["rank_correlation"]) == set(s["saliency"]["methods"])
    for method in s["saliency"]["methods"]:
        random = result.saliency_random(method)
        assert random.shape == (10, 28, 28) and not np.array_equal(random, result.saliency(method)["class_rep"])
        assert -1 <= sanity["rank_correlation"][method] <= 1
    all_maps = result.saliency("gradient")["errors_index"]  # gradient maps are cheap: every focus error
    if len(errors) <= analysis.FOCUS_ERROR_CAP:  # otherwise the most confident FOCUS_ERROR_CAP of them
        assert sorted(all_maps.tolist()) == sorted(errors.tolist())
    else:
        assert len(all_maps) == analysis.FOCUS_ERROR_CAP
    acts = result.activations()
    assert acts["layers"] and all(a.shape[0] == len(focus) for a in acts["arrays"].values())
    assert set(focus.tolist()) >= set(s["focus"]["errors"])
    with pytest.raises(RunError, match="no 'nope' saliency"):
        result.saliency("nope")


def test_missing_analysis_is_a_clear_error(analyzed_run):
    with pytest.raises(RunError, match=r"no analysis of its 'val' split.*deepdive analyze"):
        AnalysisResult.load(analyzed_run.run_dir, "val")
    res = AnalysisResult.load(analyzed_run.run_dir, "test")
    assert res.has("examples") and not res.has("verification") and res.verification is None


def test_val_split_inputs_come_from_val_indices(analyzed_run, mnist):
    run = analyzed_run.store.get_run(analyzed_run.run_id)
    data = analysis._load_split(analyzed_run.store, run, "val")
    val_idx = np.load(run.run_dir / "val_indices.npy")
    np.testing.assert_array_equal(data.idx, val_idx)
    np.testing.assert_array_equal(data.images, mnist.train_images[val_idx])
    np.testing.assert_array_equal(data.labels, mnist.train_labels[val_idx])
    assert data.inputs.shape == (len(val_idx), 1, 28, 28) and data.inputs.max() <= 1.0
    assert data.probs is None  # no stored val predictions: analyze evaluates the model


# ---- export --------------------------------------------------------------------------------------------------
NAME_COLUMNS = {c: str for c in ("name", "true_name", "pred_name", "given_name", "suggested_name",
                                  "train_label_name", "class_name", "fires_most_for_name", "label_name",
                                  "leaning_name", "verdict_label_name", "tag", "tags",
                                  "train_twin_label_name", "twin_label_name")}


def _read(path, fmt):
    # class names such as "7" must stay strings when read back from CSV
    if fmt != "csv":
        return pd.read_parquet(path)
    frame = pd.read_csv(path, dtype=NAME_COLUMNS)
    if "tags" in frame:          # the dynamics' tags, "; "-joined: an untagged image's "" reads back as missing
        frame["tags"] = frame["tags"].fillna("")
    return frame


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_export_round_trip(result, tmp_path, fmt):
    ex, s = result.examples, result.summary
    for name in export.TABLES:
        path = export.export_table(result, name, tmp_path / f"{name}.{fmt}")
        back = _read(path, fmt)
        pd.testing.assert_frame_equal(back, export.table(result, name), check_dtype=False, atol=1e-6)
    preds = _read(tmp_path / f"predictions.{fmt}", fmt)
    assert len(preds) == s["n"] and preds["true_name"].astype(str).tolist() == [str(t) for t in ex["true"]]
    np.testing.assert_allclose(preds["p3"], ex["p3"], atol=1e-6)
    errors = _read(tmp_path / f"errors.{fmt}", fmt)
    assert len(errors) == s["error_count"] and set(errors["category"]) <= {"likely label error", "ambiguous",
                                                                          "model-fixable"}
    assert errors["confidence"].is_monotonic_decreasing
    assert (errors.set_index("row")["category"] == ex.loc[errors["row"], "category"]).all()
    confusion = _read(tmp_path / f"confusion.{fmt}", fmt)
    np.testing.assert_array_equal(confusion[[f"pred_{c}" for c in range(10)]], s["confusion"]["counts"])
    per_class = _read(tmp_path / f"per-class.{fmt}", fmt)
    assert per_class["support"].tolist() == [r["support"] for r in s["per_class"]]
    assert per_class["ap"].tolist() == pytest.approx([r["ap"] for r in s["per_class"]])
    assert (per_class[["likely label error", "ambiguous", "model-fixable"]].sum(axis=1) == per_class["errors"]).all()
    issues = _read(tmp_path / f"label-issues.{fmt}", fmt)
    assert len(issues) == s["label_issues"]["count"]
    neighbours = _read(tmp_path / f"neighbours.{fmt}", fmt)
    nb = result.neighbours()
    assert len(neighbours) == nb["index"].size and neighbours["rank"].max() == nb["index"].shape[1]
    third = neighbours[neighbours["row"] == 3]
    assert third["train_idx"].tolist() == nb["index"][3].tolist() and (third["true"] == ex["true"][3]).all()
    assert third["train_label_name"].tolist() == [str(c) for c in nb["label"][3]]
    duplicates = _read(tmp_path / f"duplicates.{fmt}", fmt)
    d = s["duplicates"]
    assert len(duplicates) == d["train"]["count"] + d["split"]["count"]
    assert (duplicates["kind"] == "train").sum() == d["train"]["count"]
    assert list(duplicates.columns) == export.DUPLICATE_COLUMNS
    assert preds["train_twin_label_name"].astype(str).tolist() == [str(t) for t in ex["train_twin_label"]]
    calibration = _read(tmp_path / f"calibration.{fmt}", fmt)
    c = s["confidence"]
    assert calibration["probabilities"].tolist() == ["model"] * c["bins"] + ["temperature"] * c["bins"]
    assert calibration["count"].sum() == 2 * s["n"]
    assert calibration["accuracy"].iloc[:c["bins"]].tolist() == pytest.approx(
        [b["accuracy"] if b["count"] else np.nan for b in c["reliability"]], nan_ok=True)
    pr = _read(tmp_path / f"pr-curves.{fmt}", fmt)
    curves = s["ranking"]["pr_curves"]
    assert len(pr) == sum(len(cv["points"]) for cv in curves)
    last = pr.groupby("class").tail(1)        # each class's curve ends where every image of it is found
    assert last["recall"].tolist() == [1.0] * len(curves) and last["ap"].tolist() == [cv["ap"] for cv in curves]


def exported_run_table(analyzed_run, tmp_path, run_cli, table):
    """`deepdive export RUN <table>` of the run itself (export.RUN_TABLES), written in each format and read back."""
    for fmt in export.FORMATS:
        out = run_cli("export", analyzed_run.run_id, table, "--out", tmp_path / f"{table}.{fmt}",
                      "--workspace", analyzed_run.workspace)
        assert f"wrote {table} of run" in out.stdout
        yield _read(tmp_path / f"{table}.{fmt}", fmt)


def test_export_epochs(analyzed_run, tmp_path, run_cli):
    """`deepdive export RUN epochs`: the curves and each other metric the epochs logged, one column per name."""
    epochs = analyzed_run.store.epochs(analyzed_run.run_id)
    for back in exported_run_table(analyzed_run, tmp_path, run_cli, "epochs"):
        names = sorted(epochs[0]["metrics"])
        assert back.columns.tolist() == export.EPOCH_COLUMNS + names and "system/cpu_percent" in names
        assert back["epoch"].tolist() == [e["epoch"] for e in epochs]
        assert back[names].to_numpy().tolist() == [[e["metrics"][k] for k in names] for e in epochs]
        assert back["val_acc"].tolist() == pytest.approx([e["val_acc"] for e in epochs])


def test_export_steps(analyzed_run, tmp_path, run_cli):
    """`deepdive export RUN steps`: one row per logged step, one column per name, every point."""
    steps = analyzed_run.store.steps(analyzed_run.run_id)
    for back in exported_run_table(analyzed_run, tmp_path, run_cli, "steps"):
        names = ["epoch", "lr", "train_acc", "train_loss", "train_seconds"]
        assert back.columns.tolist() == ["step"] + names
        assert back["step"].tolist() == steps["train_loss"]["step"]
        for name in names:
            assert back[name].tolist() == pytest.approx(steps[name]["value"])
    # names logged at different steps: a column each, empty where a step did not log it
    table = export.steps_table({"a": {"step": [1, 3], "value": [0.5, None]}, "b": {"step": [2], "value": [7.0]}})
    assert table["step"].tolist() == [1, 2, 3] and table.dtypes.astype(str).tolist() == ["int64", "float64", "float64"]
    assert table.fillna(-1)[["a", "b"]].to_numpy().tolist() == [[0.5, -1], [-1, 7.0], [-1, -1]]
    assert export.steps_table({}).columns.tolist() == ["step"]


def test_export_errors(result, analyzed_run, tmp_path, run_cli):
    from deepdive.analysis import cli

    assert cli.TABLES == export.TABLES + export.RUN_TABLES   # the CLI's copy (kept so --help imports no pandas)
    with pytest.raises(DeepdiveError, match="valid tables: predictions, per-class, confusion, label-issues, errors"):
        export.export_table(result, "bogus", tmp_path / "x.csv")
    with pytest.raises(DeepdiveError, match="--format csv or --format parquet"):
        export.export_table(result, "errors", tmp_path / "x.txt")
    out = run_cli("export", analyzed_run.run_id, "bogus", "--out", tmp_path / "x.csv",
                  "--workspace", analyzed_run.workspace)
    assert out.returncode == 2 and "valid tables" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("export", analyzed_run.run_id, "errors", "--split", "val", "--out", tmp_path / "x.csv",
                  "--workspace", analyzed_run.workspace)
    assert out.returncode == 2 and "deepdive analyze" in out.stderr
    out = run_cli("export", analyzed_run.run_id, "per-class", "--out", tmp_path / "pc.csv",
                  "--workspace", analyzed_run.workspace)
    assert out.returncode == 0, out.stderr
    assert len(pd.read_csv(tmp_path / "pc.csv")) == 10


# ---- bad input: clear errors, nothing stored is damaged -------------------------------------------------------
class _Broken(nn.Module):
    def __init__(self, inner, mode):
        super().__init__()
        self.inner, self.mode = inner, mode

    def forward(self, x):
        out = self.inner(x)
        return out * float("nan") if self.mode == "nan" else out[:, :7]


def test_failing_reanalysis_leaves_the_old_one_readable(analyzed_run):
    from deepdive.models import load_checkpoint

    before = AnalysisResult.load(analyzed_run.run_dir, "test")
    model = load_checkpoint(analyzed_run.run_dir / "model_best.pt")
    for mode, message in (("nan", "NaN or infinite"), ("width", r"shape \(\d+, 7\) but the run has 10 classes")):
        with pytest.raises(DeepdiveError, match=message):
            analysis.analyze(analyzed_run.store, analyzed_run.run_id, "test", progress=False,
                             model=_Broken(model, mode))
    after = AnalysisResult.load(analyzed_run.run_dir, "test")
    assert after.summary == before.summary
    pd.testing.assert_frame_equal(after.examples, before.examples)
    assert analyzed_run.store.analysis(analyzed_run.run_id, "test")["summary"] == before.summary
    assert sorted(p.name for p in (analyzed_run.run_dir / "analysis").iterdir() if p.name.startswith("test")) \
        == ["test"]


def test_runs_without_a_finished_model_are_refused(tmp_path):
    from deepdive.store import Store

    store = Store.open(tmp_path / "ws")
    running = store.create_run("half", "mnist", {}, {}, [str(c) for c in range(10)], "cpu")
    with pytest.raises(RunError, match="is running, not finished"):
        analysis.analyze(store, running.id, progress=False)
    store.finish_run(running.id, 0.5, 1.0, 10, "cnn")
    with pytest.raises(RunError, match="no model checkpoint"):
        analysis.analyze(store, running.id, progress=False)
    with pytest.raises(DeepdiveError, match="unknown split"):
        analysis.analyze(store, running.id, "dev", progress=False)
    store.close()
