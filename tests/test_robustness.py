"""What still fools the model (deepdive.analysis.robustness): on models whose answers flip at a size known in closed
form the search finds that size; what the tiny run's analysis stores, exports and serves."""
import numpy as np
import torch
import torch.nn as nn

from deepdive.analysis import export, robustness
from deepdive.analysis.advice import stratified_sample
from deepdive.analysis.robustness import FAMILIES, FAMILY_IDS, TABLE_COLUMNS, robustness_stage


class Linear2(nn.Module):
    """Two classes, logits (0, w·x + b): the smallest Linf change that flips x is |w·x + b| / |w|_1 while no pixel
    reaches a bound (FGSM's sign step is then the best direction, and PGD within a ball reaches its corner)."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = nn.Parameter(torch.as_tensor(w)), nn.Parameter(torch.tensor(float(b)))

    def forward(self, x):
        z = (x.flatten(1) * self.w).sum(1) + self.b
        return torch.stack([torch.zeros_like(z), z], 1)


class Centroid(nn.Module):
    """Class 1 when the ink's centre lies right of column `at`, else class 0."""

    def __init__(self, at):
        super().__init__()
        self.at, self.scale = at, nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        ink = x.flatten(2).sum(2).clamp_min(1e-6)[:, 0]
        cols = torch.arange(x.shape[-1], dtype=x.dtype)
        cx = (x.sum(2)[:, 0] * cols).sum(1) / ink
        z = self.scale * (cx - self.at)
        return torch.stack([torch.zeros_like(z), z], 1)


def test_the_adversarial_size_is_the_linear_models_distance_within_the_bisection():
    rng = np.random.default_rng(0)
    w = rng.normal(size=64).astype(np.float32)
    c = rng.uniform(-0.25, 0.25, 40).astype(np.float32)                     # each picture's exact distance: |c|
    x = (0.5 + c[:, None] * np.sign(w) + 0.01 * rng.uniform(-1, 1, (40, 64))).astype(np.float32)
    score = x @ w - 0.5 * w.sum()
    model = Linear2(w, -0.5 * w.sum()).eval()
    x = x.reshape(40, 1, 8, 8)
    y = (score > 0).astype(np.int64)                                         # each picture's answer
    found = robustness.search(model, x, y, np.zeros(40, bool), np.zeros(1, np.float32), np.ones(1, np.float32))
    size, variant, into = found["adversarial"]
    exact = np.abs(score) / np.abs(w).sum()                                  # no pixel gets near 0 or 1
    assert not np.isnan(size).any() and exact.min() < 0.02 and exact.max() > 0.2
    walk = np.ceil(exact / robustness.ADV_STEP - 1e-4) * robustness.ADV_STEP   # where the walk first flips it
    # never below the true distance; above it by at most the bisection's last interval: a quarter of the one it
    # starts from, half the walk's size to all of it (from 0 when the first step flipped it)
    start = np.where(walk <= robustness.ADV_STEP + 1e-6, 0, walk / 2)
    bound = np.maximum(exact, start) + (walk - start) / 4 + 1e-4
    assert np.all(size >= exact - 1e-4) and np.all(size <= bound)
    assert np.all(into == 1 - y) and variant[0].startswith("every pixel within")
    # the stored picture is the one that flips, within the size of the original
    pics = torch.from_numpy(found["pictures"][:, FAMILY_IDS.index("adversarial")])
    assert (model(pics).argmax(1).numpy() != y).all()
    assert np.all(np.abs(pics.numpy() - x).reshape(40, -1).max(1) <= size + 1e-5)
    # toward the label: the same distance makes an error right
    mend = robustness.search(model, x, 1 - y, np.ones(40, bool), np.zeros(1, np.float32), np.ones(1, np.float32))
    m_size, _, m_into = mend["adversarial"]
    assert np.all(m_size >= exact - 1e-4) and np.all(m_size <= bound)
    assert np.all(m_into == 1 - y)


def test_a_shift_flips_the_centroid_model_at_the_shift_that_crosses():
    x = np.zeros((4, 1, 12, 12), np.float32)
    for k, col in enumerate((3, 4, 0, 3)):
        x[k, 0, 4:8, col] = 1.0        # a bar 3, 2 and 6 columns short of crossing 5.5 (a shift moves it whole)
    model = Centroid(5.5).eval()
    mending = np.array([False, False, False, True])    # the last is an error labelled 1: made right the same way
    found = robustness.search(model, x, np.array([0, 0, 0, 1]), mending, np.zeros(1, np.float32),
                              np.ones(1, np.float32))
    size, variant, into = found["shift"]
    assert size[[0, 1, 3]].tolist() == [3, 2, 3] and np.isnan(size[2])
    assert variant.tolist() == ["moved 3 px right", "moved 2 px right", "", "moved 3 px right"]
    assert into.tolist() == [1, 1, -1, 1]
    k = FAMILY_IDS.index("shift")
    assert found["pictures"][0, k, 0, 4, 6] == 1 and found["pictures"][0, k, 0, 4, 3] == 0   # stored as shifted
    np.testing.assert_array_equal(found["pictures"][2, k], x[2])                             # nothing flipped it


class Ink(nn.Module):
    """Class 1 when the picture holds more ink than `t` (`more`), or less (not `more`)."""

    def __init__(self, t, more=True):
        super().__init__()
        self.t, self.sign = t, 1.0 if more else -1.0
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        z = self.scale * self.sign * (x.flatten(1).sum(1) - self.t)
        return torch.stack([torch.zeros_like(z), z], 1)


def _lean(x):
    """How far each picture's ink leans right per row upward: -cov(column, row) / var(row), ink-weighted. A slant
    by s degrees moves each row sideways in proportion to its height, so it adds tan(s) exactly."""
    x = torch.as_tensor(x)[:, 0].double()
    rows, cols = torch.meshgrid(*(torch.arange(n, dtype=x.dtype) for n in x.shape[1:]), indexing="ij")
    m = x.sum((1, 2))
    mr, mc = (x * rows).sum((1, 2)) / m, (x * cols).sum((1, 2)) / m
    cov = (x * (rows - mr[:, None, None]) * (cols - mc[:, None, None])).sum((1, 2)) / m
    return -cov / ((x * (rows - mr[:, None, None]) ** 2).sum((1, 2)) / m)


class Lean(nn.Module):
    """Class 1 when the ink leans right by more than `deg` degrees."""

    def __init__(self, deg):
        super().__init__()
        self.t, self.scale = float(np.tan(np.radians(deg))), nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        z = self.scale * (_lean(x).float() - self.t)
        return torch.stack([torch.zeros_like(z), z], 1)


def test_thicker_and_thinner_pens_flip_an_ink_model_where_the_ink_crosses():
    """A 2x2 dilation grows a w x h bar to (w + 1) x (h + 1), an erosion shrinks it to (w - 1) x (h - 1)."""
    x = np.zeros((3, 1, 14, 14), np.float32)
    x[0, 0, 5:9, 6:8] = 1.0         # 2 x 4 = 8 of ink; 1 px thicker: 3 x 5 = 15
    x[1, 0, 5:9, 6] = 1.0           # 1 x 4 = 4; 2 x 5 = 10; 3 x 6 = 18
    x[2] = x[0]                     # an error labelled 1: made right the same way
    found = robustness.search(Ink(12.0).eval(), x, np.array([0, 0, 1]), np.array([False, False, True]),
                              np.zeros(1, np.float32), np.ones(1, np.float32))
    size, variant, into = found["thickness"]
    assert size.tolist() == [1, 2, 1] and into.tolist() == [1, 1, 1]
    assert variant.tolist() == ["1 px thicker", "2 px thicker", "1 px thicker"]
    k = FAMILY_IDS.index("thickness")
    assert found["pictures"][0, k].sum() == 15 and found["pictures"][1, k].sum() == 18
    # the other way: less ink than 9 reads 1; a 3 x 5 bar (15) flips by one erosion (2 x 4 = 8), after the thicker
    # pen tried first; a 4 x 6 bar (24) would need two (3 x 5 = 15 first), and thinner goes one step only
    bars = np.zeros((2, 1, 14, 14), np.float32)
    bars[0, 0, 5:10, 6:9] = 1.0
    bars[1, 0, 5:11, 6:10] = 1.0
    found = robustness.search(Ink(9.0, more=False).eval(), bars, np.array([0, 0]), np.array([False, False]),
                              np.zeros(1, np.float32), np.ones(1, np.float32))
    size, variant, into = found["thickness"]
    assert size[0] == 1 and np.isnan(size[1]) and variant.tolist() == ["1 px thinner", ""]
    assert into.tolist() == [1, -1]


def test_a_slant_flips_a_lean_model_at_the_angle_that_crosses():
    x = np.zeros((3, 1, 16, 16), np.float32)
    x[0, 0, 3:13, 8] = 1.0                                   # upright: leans 0
    for r in range(3, 13):
        x[1, 0, r, 8 + (12 - r) // 5] = 1.0                  # leans a little right
        x[2, 0, r, 5 + (12 - r) // 3] = 1.0                  # leans far right: the model reads 1
    lean = _lean(x).numpy()
    t = np.tan(np.radians(12.0))
    sizes = np.array(robustness.FAMILIES[FAMILY_IDS.index("slant")].sizes)
    tan = np.tan(np.radians(sizes))
    assert lean[0] == 0 and 0 < lean[1] < t < lean[2]
    assert np.abs(np.r_[(lean[:2, None] + tan).ravel(), lean[2] - tan] - t).min() > 0.01   # none on the threshold
    # slanted right until it crosses; the one leaning far right slanted back left
    expected = [sizes[lean[0] + tan > t][0], sizes[lean[1] + tan > t][0], sizes[lean[2] - tan <= t][0]]
    found = robustness.search(Lean(12.0).eval(), x, np.array([0, 0, 1]), np.zeros(3, bool),
                              np.zeros(1, np.float32), np.ones(1, np.float32))
    size, variant, into = found["slant"]
    assert size.tolist() == expected and expected[0] == 15 and expected[1] < 15
    assert variant.tolist() == [f"slanted {expected[0]}° to the right", f"slanted {expected[1]}° to the right",
                                f"slanted {expected[2]}° to the left"]
    assert into.tolist() == [1, 1, 0]


def test_the_stage_writes_the_table_and_summary(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.normal(size=64).astype(np.float32)
    x = (0.5 + 0.1 * rng.uniform(-1, 1, (60, 1, 8, 8))).astype(np.float32)
    score = x.reshape(60, -1) @ w
    model = Linear2(w, -np.median(score)).eval()
    preds = (score - np.median(score) > 0).astype(np.int64)
    labels = preds.copy()
    labels[:3] = 1 - labels[:3]                         # three errors
    entry = robustness_stage(model, x, labels, preds, [0, 1, 2], 2, tmp_path, sample=20)
    drawn = stratified_sample(labels, 20)
    right = drawn[labels[drawn] == preds[drawn]]           # the right answers among the pictures drawn
    table = __import__("pandas").read_parquet(tmp_path / "robustness.parquet")
    n = len(right) + 3
    assert list(table.columns) == list(TABLE_COLUMNS) and len(table) == len(FAMILIES) * n
    assert table["row"].tolist()[:n] == [*right.tolist(), 0, 1, 2]
    assert entry["available"] and entry["n"] == len(right) and entry["errors"] == 3 and entry["drawn"] == 20
    pictures = np.load(tmp_path / "robustness_images.npy")
    assert pictures.shape == (n, len(FAMILIES), 8, 8) and pictures.dtype == np.uint8
    adv = entry["families"][FAMILY_IDS.index("adversarial")]
    assert adv["flipped"] == len(right) and adv["errors"]["mended"] == 3
    holds = {f["id"]: f["holds"] for f in entry["families"]}      # what nothing flipping means, as the pages say it
    assert holds["turn"] == "holds to 45°" and holds["adversarial"] == "holds to ε∞ 0.3"
    assert holds["thickness"] == "holds 3 px thicker and 1 px thinner"
    assert all(a >= b for a, b in zip(adv["curve"], adv["curve"][1:]))     # a bigger change leaves fewer right
    assert sum(n for _, _, n in adv["into"]) == len(right) and all(t != q for t, q, _ in adv["into"])
    # the confusion's only off-diagonal pairs are the three errors'
    assert adv["into_error_pairs"] <= len(right) and adv["error_pairs"] in (1, 2)
    # two classes: every flip goes to the one other class, so chance and the count agree
    assert adv["into_error_pairs_chance"] == adv["into_error_pairs"]


def test_the_analysis_stores_exports_and_serves_it(res, analyzed_run, client):
    entry = res.summary["robustness"]
    errors = res.summary["focus"]["errors"]
    assert entry["available"] and entry["errors"] == len(errors) and "robustness" in res.summary["stage_seconds"]
    assert [f["id"] for f in entry["families"]] == list(FAMILY_IDS)
    table = export.table(res, "robustness")
    assert len(table) == len(FAMILIES) * (entry["n"] + entry["errors"])
    assert {"idx", "true_name", "into_name"} <= set(table.columns)
    mended = table[table["mending"] & table["size"].notna()]
    assert (mended["into"] == mended["true"]).all()           # an error made right gives its label
    fooled = table[~table["mending"] & table["size"].notna()]
    assert (fooled["into"] != fooled["true"]).all()
    base = f"/api/runs/{analyzed_run.run_id}/splits/test"
    row = int(table["row"].iat[0])
    body = client.get(f"{base}/robustness/{row}").json()
    assert [f["id"] for f in body["families"]] == list(FAMILY_IDS) and body["mending"] is False
    assert all(f["image"].startswith("data:image/png;base64,") for f in body["families"])
    untried = sorted(set(range(len(res.examples))) - set(table["row"].tolist()))[0]
    missing = client.get(f"{base}/robustness/{untried}")
    assert missing.status_code == 404 and "not one of the" in missing.json()["detail"]
    bundle = client.get(f"{base}/bundle").json()["robustness"]
    n = entry["n"] + entry["errors"]
    assert bundle["rows"] == table["row"].tolist()[:n] and bundle["errors_from"] == entry["n"]
    for f, fam in enumerate(FAMILY_IDS):        # the variants as codes into each family's names
        v = bundle["variant"][fam]
        decoded = ["" if c < 0 else v["names"][c] for c in v["codes"]]
        assert decoded == res.robustness()["variant"].tolist()[f * n:(f + 1) * n], fam
    assert {str(r) for r in errors[:60]} <= set(bundle["pictures"])


def test_a_size_stored_at_the_limit_counts_as_flipped_by_it():
    """float32 0.05 reads 0.0500000007 as a float64: still a flip "up to 0.05"."""
    got = robustness.flipped_by(np.array([0.05, 0.0575, np.nan, 15.0], np.float32), 0.05)
    assert got.tolist() == [True, False, False, False]
    assert robustness.median_size(np.array([0.01, np.nan, np.nan])) is None
    assert robustness.median_size(np.array([0.01, 0.03, np.nan])) == 0.03


def test_two_models_on_the_same_pictures_pair_up():
    """verify-advice's reading: a model that needs a longer shift to flip holds pictures the other flips."""
    x = np.zeros((6, 1, 12, 12), np.float32)
    for k, col in enumerate((3, 4, 2, 3, 4, 2)):
        x[k, 0, 4:8, col] = 1.0
    labels = np.zeros(6, np.int64)
    right = np.ones(6, bool)
    parts = robustness.paired_flips(Centroid(5.5).eval(), Centroid(6.5).eval(), x, labels, right, right,
                                    robustness.trained_against({"shift": 2}), sample=6)
    assert [p["id"] for p in parts] == ["shift"]
    np.testing.assert_array_equal(parts[0]["before"], [3, 2, 4, 3, 2, 4])
    np.testing.assert_array_equal(parts[0]["after"], [4, 3, 5, 4, 3, 5])
    (summary,) = robustness.paired_summary([parts, parts])          # two seeds pooled
    assert summary["pictures"] == 12 and summary["flipped_before"] == 4 and summary["flipped_after"] == 0
    assert summary["paired"]["fixed"] == 4 and summary["paired"]["new"] == 0
    assert summary["median_before"] == 3 and summary["median_after"] == 4
    assert [f.id for f in robustness.trained_against({"thicken": 0.2, "shear": 10})] == ["slant", "thickness"]
    assert robustness.trained_against({"stretch": 0.1}) == () and robustness.paired_summary([]) == []


def test_a_sample_of_zero_skips_the_search_and_the_defaults_agree(tmp_path):
    import argparse
    import inspect

    import pytest

    from deepdive.analysis import analyze, cli
    from deepdive.errors import DeepdiveError

    entry = robustness_stage(Linear2(np.ones(4, np.float32), 0.0), np.zeros((3, 1, 2, 2), np.float32), [0, 1, 1],
                             [0, 1, 0], [2], 2, tmp_path, sample=0)
    assert entry == {"available": False, "reason": "not searched (deepdive analyze --robustness-sample 0)"}
    assert not list(tmp_path.iterdir())
    assert inspect.signature(analyze).parameters["robustness_sample"].default == robustness.SAMPLE
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["analyze", "x"]).robustness_sample == robustness.SAMPLE
    assert parser.parse_args(["analyze", "x", "--robustness-sample", "0"]).robustness_sample == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["analyze", "x", "--robustness-sample", "-1"])
    with pytest.raises(DeepdiveError, match="robustness_sample must be an integer >= 0"):
        analyze(None, "x", robustness_sample=-1)


def test_no_right_answer_drawn_leaves_only_the_errors(tmp_path):
    """A model wrong on every picture drawn: the errors are still searched; the summary and its line say so."""
    from deepdive.analysis.cli import robustness_lines

    rng = np.random.default_rng(2)
    w = rng.normal(size=16).astype(np.float32)
    x = (0.5 + 0.1 * rng.uniform(-1, 1, (6, 1, 4, 4))).astype(np.float32)
    model = Linear2(w, 0.0).eval()
    preds = (x.reshape(6, -1) @ w > 0).astype(np.int64)
    entry = robustness_stage(model, x, 1 - preds, preds, range(6), 2, tmp_path, sample=6)
    assert entry["n"] == 0 and entry["errors"] == 6 and entry["drawn"] == 6
    adv = entry["families"][-1]
    assert adv["curve"][0] is None and adv["errors"]["mended"] == 6
    assert robustness_lines(entry)[0] == "what fools it: no right answer among the 6 pictures drawn to try"


def test_an_analysis_written_before_slants_and_the_pen_still_serves_and_compares(analyzed_run, copy_workspace,
                                                                                tmp_path):
    """An earlier analysis searched four kinds: the bundle, an image's entries and Compare read the table's own
    families, not the six of today (a block taken by position would file the invisible change under slant)."""
    import json
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from deepdive.analysis.compare import _robustness
    from deepdive.analysis.results import analysis_dir
    from deepdive.web.app import create_app

    old_ids = ["turn", "shift", "zoom", "adversarial"]
    ws = copy_workspace(analyzed_run.workspace, tmp_path / "ws")
    run_dir = ws / analyzed_run.run_dir.relative_to(analyzed_run.workspace)
    folder = analysis_dir(run_dir, "test")
    table = __import__("pandas").read_parquet(folder / "robustness.parquet")
    old = table[table["family"].isin(old_ids)].reset_index(drop=True)
    old.to_parquet(folder / "robustness.parquet", index=False)
    keep = [FAMILY_IDS.index(i) for i in old_ids]
    np.save(folder / "robustness_images.npy", np.load(folder / "robustness_images.npy")[:, keep])
    summary = json.loads((folder / "summary.json").read_text())
    entry = summary["robustness"]
    entry["families"] = [{k: v for k, v in f.items() if k != "holds"} for f in entry["families"] if f["id"] in old_ids]
    (folder / "summary.json").write_text(json.dumps(summary))

    n = len(old) // len(old_ids)
    base = f"/api/runs/{analyzed_run.run_id}/splits/test"
    with TestClient(create_app(ws)) as client:
        bundle = client.get(f"{base}/bundle").json()["robustness"]
        assert list(bundle["size"]) == old_ids
        adv = old[old["family"] == "adversarial"]["size"].to_numpy(np.float64)
        assert [None if np.isnan(v) else round(float(v), 4) for v in adv] == bundle["size"]["adversarial"]
        assert all(len(bundle["size"][i]) == n for i in old_ids)
        row = int(old["row"].iat[0])
        body = client.get(f"{base}/robustness/{row}").json()
        assert [f["id"] for f in body["families"]] == old_ids
    # Compare against today's analysis of the same run: the four kinds both searched
    parts = _robustness(SimpleNamespace(run_dir=run_dir), SimpleNamespace(run_dir=analyzed_run.run_dir), "test")
    assert [p["id"] for p in parts] == old_ids and all(p["paired"]["fixed"] == p["paired"]["new"] == 0 for p in parts)
