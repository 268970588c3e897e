"""The web API (FastAPI TestClient) and the report packer, on the small analysed run of tests/conftest.py."""
import io
import json
import re
import shutil
import sqlite3
from contextlib import closing

import numpy as np
import pytest

pytest.importorskip("fastapi")

from deepdive.web import page  # noqa: E402
from deepdive.web.report import build_report  # noqa: E402

XSS_RUN = "<script>alert(1)</script>"
# Class names that would run code or break out of a <script> block if any of them reached the DOM as markup.
XSS_CLASSES = ['<img src=x onerror=alert("c0")>', "</script><script>alert(2)</script>", "<!--c2"]


def hostile_copy(run, dest):
    """A copy of `run`'s workspace whose run name and first class names are XSS payloads; returns the workspace."""
    ws = dest / "hostile_ws"
    shutil.copytree(run.workspace, ws, ignore=shutil.ignore_patterns("deepdive.sqlite*"))
    # The session's store is open on the original: copy the database through SQLite's backup API (WAL-safe).
    with closing(sqlite3.connect(run.workspace / "deepdive.sqlite")) as src, \
            closing(sqlite3.connect(ws / "deepdive.sqlite")) as dst:
        src.backup(dst)
    summary_path = ws / run.run_id / "analysis" / "test" / "summary.json"
    summary = json.loads(summary_path.read_text())
    names = XSS_CLASSES + summary["class_names"][len(XSS_CLASSES):]
    summary["class_names"] = names
    for row in summary.get("per_class", []):
        row["name"] = names[row["class"]]
    summary_path.write_text(json.dumps(summary))
    with closing(sqlite3.connect(ws / "deepdive.sqlite")) as db, db:
        db.execute("UPDATE runs SET name = ?, class_names_json = ? WHERE id = ?", (XSS_RUN, json.dumps(names), run.run_id))
    return ws


@pytest.fixture(scope="module")
def base(analyzed_run):
    return f"/api/runs/{analyzed_run.run_id}/splits/test"


def png_size(data: bytes):
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data)).size


def test_index_and_static(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    for name in (*page.SCRIPTS, *page.STYLES):
        assert f'src="/static/{name}"' in r.text or f'href="/static/{name}"' in r.text
        assert client.get(f"/static/{name}").status_code == 200
    plotly = client.get("/static/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000  # the bundled plotly.js, served locally


def test_runs_list_and_run(client, analyzed_run):
    runs = client.get("/api/runs").json()
    row = next(r for r in runs if r["id"] == analyzed_run.run_id)
    assert row["splits"] == ["test"] and row["status"] == "finished"
    assert row["recipe_group"] == "mnist · fast · 1 ep · 3,000 images"     # the seeds of one recipe together
    assert row["recipe"] == "fast · 1 ep · seed 0 · 3,000 images" and row["resumable"] is False
    one = client.get(f"/api/runs/{analyzed_run.run_id}").json()
    assert one["id"] == analyzed_run.run_id and one["config"]["preset"] == "fast"
    from deepdive.analysis.insight import early_stop       # the run page's early-stopping hint, analysed or not

    assert one["insight"] == early_stop(analyzed_run.store.epochs(analyzed_run.run_id))
    assert client.get(f"/api/runs/{analyzed_run.run_id}/histograms").status_code == 200
    epochs = client.get(f"/api/runs/{analyzed_run.run_id}/epochs").json()
    assert epochs == analyzed_run.store.epochs(analyzed_run.run_id) and len(epochs) == 1
    for bad in ("nope", "..%2F..%2Fetc", analyzed_run.run_id[:8]):       # exact ids only, like every run URL
        assert client.get(f"/api/runs/{bad}/epochs").status_code == 404
        assert client.get(f"/api/runs/{bad}/steps").status_code == 404
    steps = client.get(f"/api/runs/{analyzed_run.run_id}/steps").json()
    assert steps == analyzed_run.store.steps(analyzed_run.run_id)
    assert set(steps) == {"epoch", "lr", "train_acc", "train_loss", "train_seconds"}


def test_bundle_matches_the_analysis(client, base, res, analyzed_run):
    b = client.get(f"{base}/bundle").json()
    frame = res.examples
    assert b["run"]["id"] == analyzed_run.run_id and b["split"] == "test"
    assert b["examples"]["n"] == len(frame) == len(res.images)
    cols = b["examples"]["columns"]
    assert cols["true"] == frame["true"].tolist() and cols["pred"] == frame["pred"].tolist()
    assert sum(cols["label_issue"]) == int(frame["label_issue"].sum()) == len(b["label_issues"])
    cats = b["examples"]["categories"]
    assert [cats[c] for c in cols["category"]] == frame["category"].astype(str).tolist()
    probs = np.array(b["examples"]["probs"]).T
    assert np.allclose(probs, frame[[f"p{c}" for c in range(res.num_classes)]].to_numpy(), atol=1e-4)
    assert b["summary"]["confusion"]["counts"] == res.summary["confusion"]["counts"]
    assert len(b["epochs"]) == analyzed_run.result["epochs"]
    assert b["saliency"]["methods"] == res.saliency_methods and b["saliency"]["legend"].startswith("data:image/png")
    counts = {m: len(res.saliency(m)["errors_index"]) for m in res.saliency_methods}
    assert b["saliency"]["errors_count"] == counts and len(b["saliency"]["errors_rows"]) == max(counts.values())
    assert b["images"]["sheets"] == [f"{base}/sprites/0.png"]


def test_gradcam_note_says_where_its_maps_sit(res):
    from types import SimpleNamespace

    from deepdive.web.bundle import method_notes

    # the analysis records Grad-CAM's margin: the fast preset's CPU net leaves its 5x5 stem unpadded (28 -> 24)
    assert res.summary["saliency"]["settings"]["gradcam"]["margin"] == 2
    note = method_notes(res)["gradcam"]
    assert "central 24×24 pixels" in note and "2-pixel border is left blank" in note
    summary = json.loads(json.dumps(res.summary))
    summary["saliency"]["settings"]["gradcam"].update(margin=10, layer="act5")   # a stack5 net: an 8x8 map
    note = method_notes(SimpleNamespace(summary=summary, images=res.images))["gradcam"]
    assert "(act5)" in note and "central 8×8 pixels" in note and "10-pixel border is left blank" in note
    summary["saliency"]["settings"]["gradcam"]["margin"] = 0                     # a padded stem: maps cover it all
    summary["saliency"]["sanity"] = {"alike_at": 0.5, "rank_correlation": {"gradient": 0.1, "gradcam": 0.2}}
    assert method_notes(SimpleNamespace(summary=summary, images=res.images)) == {}
    # the sanity check's warning for maps that stay alike with shuffled weights, after Grad-CAM's own note
    summary["saliency"]["settings"]["gradcam"]["margin"] = 2
    summary["saliency"]["sanity"] = {"alike_at": 0.5,
                                     "rank_correlation": {"gradient": 0.1, "gradcam": 0.7, "occlusion": 0.5},
                                     "rank_correlation_nonzero": {"gradcam": 0.25, "occlusion": None}}
    notes = method_notes(SimpleNamespace(summary=summary, images=res.images))
    assert set(notes) == {"gradcam", "occlusion"}
    assert notes["gradcam"].startswith("Grad-CAM's layer")
    assert "stay alike (ρ 0.70, 0.25 where the input" in notes["gradcam"]
    assert "stay alike (ρ 0.50)" in notes["occlusion"]
    # an analysis made before the check carried its reading line (alike_at) gets no warning, not an error
    del summary["saliency"]["sanity"]["alike_at"]
    assert set(method_notes(SimpleNamespace(summary=summary, images=res.images))) == {"gradcam"}


def test_sprite_sheet(client, base, res):
    r = client.get(f"{base}/sprites/0.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    h, w = res.images.shape[1:3]
    assert png_size(r.content) == (100 * w, -(-len(res.images) // 100) * h)
    assert client.get(f"{base}/sprites/1.png").status_code == 404


def test_saliency_images(client, base, res):
    frame = res.examples
    error = int(res.saliency(res.saliency_methods[0])["errors_index"][0])  # stored for every method
    correct = int(np.flatnonzero(frame["correct"].to_numpy())[0])          # computed on demand
    for method in res.saliency_methods:
        for row, target in ((error, frame["pred"][error]), (error, frame["true"][error]), (correct, frame["true"][correct])):
            r = client.get(f"{base}/saliency/{method}/row/{row}.png", params={"target": int(target)})
            assert r.status_code == 200 and png_size(r.content)[0] >= 112
        for kind in ("rep", "mean", "random"):
            assert client.get(f"{base}/saliency/{method}/class/{kind}/0.png").status_code == 200


def test_activations_on_demand_and_precomputed(client, base, res):
    layers = res.activations()["layers"]
    focus = int(res.focus_indices[0])
    other = next(r for r in range(len(res.images)) if r not in set(res.focus_indices.tolist()))
    for row, source in ((focus, "precomputed"), (other, "computed")):
        body = client.get(f"{base}/activations/{row}").json()
        assert body["source"] == source and [x["name"] for x in body["layers"]] == [x["name"] for x in layers]
        assert all(x["image"].startswith("data:image/png;base64,") and x["stats"] for x in body["layers"])


@pytest.mark.parametrize("path", [
    "/api/runs/{run}/splits/..%2F..%2F..%2Fetc%2Fpasswd/bundle",
    "/api/runs/..%2F..%2Fetc%2Fpasswd/splits/test/bundle",
    "/api/runs/%2e%2e%2f%2e%2e%2fdeepdive.sqlite/splits/test/bundle",
    "/api/runs/{run}/splits/test/sprites/..%2F..%2F..%2Fmodel_best.pt",
    "/api/runs/{run}/splits/test/saliency/..%2F..%2Fgradient/row/0.png?target=0",
    "/static/..%2Fapp.py",
    "/static/%2e%2e%2fapp.py",
    "/static/..%2F..%2F..%2Fetc%2Fpasswd",
    "/static/../app.py",
])
def test_path_traversal_is_refused(client, analyzed_run, path):
    r = client.get(path.format(run=analyzed_run.run_id))
    assert 400 <= r.status_code < 500
    assert b"import " not in r.content and b"root:" not in r.content and b"SQLite" not in r.content


@pytest.mark.parametrize("suffix, status", [
    ("/api/runs/20990101-000000-abcdef", 404),
    ("/api/runs/20990101-000000-abcdef/splits/test/bundle", 404),
    ("/api/runs/{prefix}/splits/test/bundle", 404),          # ids must be exact in URLs
    ("/api/runs/{run}/splits/train/bundle", 404),            # not analysed
    ("/api/runs/{run}/splits/nosuch/bundle", 404),
    ("/api/runs/{run}/splits/test/saliency/nosuch/row/0.png?target=0", 404),
    ("/api/runs/{run}/splits/test/saliency/gradient/row/99999.png?target=0", 404),
    ("/api/runs/{run}/splits/test/saliency/gradient/row/-1.png?target=0", 404),
    ("/api/runs/{run}/splits/test/saliency/gradient/row/0.png?target=10", 404),
    ("/api/runs/{run}/splits/test/saliency/gradient/class/other/0.png", 404),
    ("/api/runs/{run}/splits/test/activations/99999", 404),
    ("/api/runs/{run}/splits/test/activations/abc", 422),
])
def test_unknown_things_are_4xx(client, analyzed_run, suffix, status):
    r = client.get(suffix.format(run=analyzed_run.run_id, prefix=analyzed_run.run_id[:8]))
    assert r.status_code == status, r.text


def test_a_diverged_epoch_is_served_as_gaps(tmp_path):
    """An epoch whose loss became inf or NaN (its own metrics too) reaches the browser as nulls: JSON has no inf."""
    from fastapi.testclient import TestClient

    import deepdive
    from deepdive.store import Store
    from deepdive.web.app import create_app

    run = deepdive.init(name="diverged", workspace=tmp_path)
    run.log(train_loss=0.5, grad_norm=2.0)
    run.log(train_loss=float("inf"), val_loss=float("nan"), grad_norm=float("inf"))
    run.finish()
    with TestClient(create_app(tmp_path)) as client:
        r = client.get(f"/api/runs/{run.id}/epochs")
        assert r.status_code == 200
        assert [(e["train_loss"], e["val_loss"], e["metrics"]["grad_norm"]) for e in r.json()] == \
            [(0.5, None, 2.0), (None, None, None)]
        # what it logged per step, averaged down to bundle.STEP_POINTS points, its NaN a gap
        with Store.open(tmp_path) as store:
            store.log_steps(run.id, [(s, {"loss": float("nan") if s == 7 else s}) for s in range(5000)])
        r = client.get(f"/api/runs/{run.id}/steps")
        assert r.status_code == 200 and r.json()["loss"]["every"] == 3
        assert r.json()["loss"]["step"][:3] == [2, 5, 8] and r.json()["loss"]["value"][:3] == [1, 4, 7]


def test_delete_a_run(analyzed_run, copy_workspace, tmp_path):
    """DELETE /api/runs/{id}: the run goes whole (its bundle was served and cached a moment before); exact ids
    only, a running run is a conflict."""
    from fastapi.testclient import TestClient

    from deepdive.store import Store
    from deepdive.web.app import create_app

    ws = copy_workspace(analyzed_run.workspace, tmp_path / "ws")
    rid = analyzed_run.run_id
    with Store.open(ws) as store, TestClient(create_app(ws)) as client:
        busy = store.create_run("busy", "mnist", {}, {}, [str(c) for c in range(10)], "cpu").id
        assert client.get(f"/api/runs/{rid}/splits/test/bundle").status_code == 200
        assert client.delete(f"/api/runs/{rid[:8]}").status_code == 404
        r = client.delete(f"/api/runs/{busy}")
        assert r.status_code == 409 and "still running" in r.json()["detail"]
        r = client.delete(f"/api/runs/{rid}")
        assert r.status_code == 200 and r.json()["deleted"] == rid and r.json()["freed_bytes"] > 1_000_000
        assert client.get(f"/api/runs/{rid}/splits/test/bundle").status_code == 404
        assert [r["id"] for r in client.get("/api/runs").json()] == [busy] and not (ws / rid).exists()
        assert client.delete(f"/api/runs/{rid}").status_code == 404


def test_rename_a_run_and_write_its_notes(analyzed_run, copy_workspace, tmp_path):
    """PATCH /api/runs/{id}: the new name shows in the list and in the run's bundle (cached before the edit)."""
    from fastapi.testclient import TestClient

    from deepdive.web.app import create_app

    ws = copy_workspace(analyzed_run.workspace, tmp_path / "ws")
    rid = analyzed_run.run_id
    with TestClient(create_app(ws)) as client:
        assert client.get(f"/api/runs/{rid}/splits/test/bundle").json()["run"]["name"] != "renamed"
        r = client.patch(f"/api/runs/{rid}", json={"name": "renamed", "notes": "first try"})
        assert r.status_code == 200 and (r.json()["name"], r.json()["notes"]) == ("renamed", "first try")
        assert client.get("/api/runs").json()[0]["notes"] == "first try"
        assert client.get(f"/api/runs/{rid}/splits/test/bundle").json()["run"]["name"] == "renamed"
        r = client.patch(f"/api/runs/{rid}", json={"name": "latest"})
        assert r.status_code == 422 and "invalid run name" in r.json()["detail"]
        assert client.patch("/api/runs/20990101-000000-abcdef", json={"notes": "x"}).status_code == 404


def test_json_for_script_cannot_close_the_block():
    payload = {"name": "</script><script>alert(1)</script><!--", "amp": "a&b", "sep": "\u2028"}
    text = page.json_for_script(payload)
    assert "</" not in text and "<!--" not in text and "<" not in text
    assert json.loads(text) == payload


def test_report_is_self_contained_and_escaped(analyzed_run, res, tmp_path):
    ws = hostile_copy(analyzed_run, tmp_path)
    out = tmp_path / "report.html"
    info = build_report(ws, analyzed_run.run_id, "test", out)
    html = out.read_text()
    assert info["bytes"] == out.stat().st_size < 15_000_000
    # The markup outside the scripts names no URL to fetch (the browser test records the actual requests),
    # and the page's CSP forbids connections.
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "", html, flags=re.S)
    # the Content-Security-Policy's script hashes are base64, which may hold "//" by chance (it did, 2026-12-06)
    markup = re.sub(r"'sha256-[A-Za-z0-9+/]+=*'", "'sha256-…'", markup)
    assert not re.search(r"(https?:)?//", markup) and 'rel="stylesheet"' not in markup
    assert "connect-src 'none'" in html
    # The hostile names occur only escaped: as HTML text in <title>, as \u003c-escaped JSON in the data block.
    assert XSS_RUN not in html and XSS_CLASSES[0] not in html and "<!--c2" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; · deepdive report" in html
    block = re.search(r'<script type="application/json" id="dd-bundle">(.*?)</script>', html, re.S).group(1)
    bundle = json.loads(block)
    assert bundle["run"]["name"] == XSS_RUN and bundle["class_names"][:3] == XSS_CLASSES
    assert bundle["examples"]["n"] == len(res.images)
    assert all(s.startswith("data:image/png;base64,") for s in bundle["images"]["sheets"])
    # the training dynamics are in, with their pictures; or, where this copy's renamed classes keep its dataset from
    # loading (the training images are cached once loaded for another run of the dataset), a note saying why
    dyn = bundle["dynamics"]
    assert dyn["available"]
    assert (dyn["pictures"] and all(s.startswith("data:image/png;base64,") for s in dyn["pictures"].values())) or \
        (dyn["pictures"] == {} and "cannot be loaded" in dyn["pictures_note"])
    sal = bundle["saliency"]
    for method in res.saliency_methods:
        # Only stored maps are inlined: a method with fewer stored errors has None past them.
        assert len(sal["errors"][method]) == len(sal["errors_rows"])
        assert all(pair is None for pair in sal["errors"][method][sal["errors_count"][method]:])
        assert len(sal["class_mean"][method]) == len(sal["class_rep"][method]) == res.num_classes
    acts = bundle["activations"]
    assert acts["rows"] and set(acts["data"]) == {str(r) for r in acts["rows"]}
    assert set(acts["rows"]) <= set(res.focus_indices.tolist())


def test_a_report_past_its_size_target_still_holds_activations(analyzed_run, res, tmp_path, monkeypatch):
    """Where everything else already passes the report's size target (many classes, large pictures), the
    Activations view still gets the first focus images' maps (ACTIVATION_FLOOR), never none."""
    from deepdive.web import report

    monkeypatch.setattr(report, "MAX_BYTES", 1000)
    monkeypatch.setattr(report, "ACTIVATION_FLOOR", 1)          # the first image goes in whatever its size
    info = build_report(analyzed_run.workspace, analyzed_run.run_id, "test", tmp_path / "report.html")
    assert info["activation_images"] == 1
    monkeypatch.setattr(report, "ACTIVATION_FLOOR", 512 * 1024)
    info = build_report(analyzed_run.workspace, analyzed_run.run_id, "test", tmp_path / "report.html")
    assert 1 < info["activation_images"] < len(res.focus_indices)


def unpack(p):
    """What DD.unpack gives for a packed bundle column (deepdive.web.bundle.packed)."""
    import base64

    raw = np.frombuffer(base64.b64decode(p["data"]), dtype=np.dtype(p["dtype"]).newbyteorder("<")).astype(np.float64)
    return (np.cumsum(raw) if p["delta"] else raw) / p["scale"]


def test_packed_columns_round_trip_and_widen_when_they_must():
    from deepdive.web.bundle import packed

    idx = np.array([3, 9, 70_000, 70_001])               # a step past uint16: stored as int32
    p = packed(idx, np.uint16, delta=True)
    assert p["dtype"] == "int32" and unpack(p).tolist() == idx.tolist()
    assert unpack(packed([0.25, 1.0], np.uint8, 255)).tolist() == pytest.approx([0.25, 1.0], abs=1 / 510)
    p = packed([1e12, -3.5], np.uint8)                    # fits no integer type: float64
    assert p["dtype"] == "float64" and unpack(p).tolist() == [1e12, -3.5]
    assert unpack(packed([], np.uint8)).tolist() == []


def test_training_dynamics_endpoints(client, base, res, analyzed_run):
    """The bundle's data map holds every training image; one image's answers per epoch, pictures by index and a
    verdict on a training image's label go through .../dynamics."""
    table = res.dynamics()
    dyn = client.get(f"{base}/bundle").json()["dynamics"]
    columns = {key: unpack(column) for key, column in dyn["map"].items()}
    assert dyn["available"] and len(columns["idx"]) == len(table) == dyn["images"]
    assert columns["idx"].tolist() == table["idx"].tolist() and columns["label"].tolist() == table["label"].tolist()
    for key, step in (("confidence", 1 / 65535), ("variability", 1 / 510), ("correctness", 1 / 255)):
        assert np.abs(columns[key] - table[key].to_numpy()).max() <= step / 2 + 1e-6
    listed = [item["idx"] for key in ("flagged", "ambiguous", "hard") for item in dyn[key]]
    assert listed and set(map(str, listed)) == set(dyn["pictures"])
    assert [item["aum"] for item in dyn["flagged"]] == sorted(item["aum"] for item in dyn["flagged"])
    assert all(item["aum"] < 0 for item in dyn["flagged"])

    idx = int(table["idx"].iat[5])
    one = client.get(f"{base}/dynamics/{idx}").json()
    assert one["idx"] == idx and one["picture"].startswith("data:image/png;base64,")
    assert one["image"]["given"] == int(table["given"].iat[5]) and len(one["image"]["trajectory"]["p_true"]) == 1
    assert client.get(f"{base}/dynamics/{int(table['idx'].max()) + 1}").status_code == 404   # not trained on
    pics = client.get(f"{base}/dynamics/pictures", params={"idx": f"{idx},{int(table['idx'].iat[0])}"}).json()
    assert set(pics) == {str(idx), str(int(table["idx"].iat[0]))}
    many = ",".join(str(i) for i in table["idx"].iloc[:201])
    assert client.get(f"{base}/dynamics/pictures", params={"idx": many}).status_code == 422
    assert client.get(f"{base}/dynamics/pictures", params={"idx": "1,x"}).status_code == 422

    given = one["image"]["given"]
    other = (given + 1) % 10
    try:
        put = client.put(f"{base}/dynamics/reviews/{idx}", json={"verdict": "relabel", "label": other}).json()
        assert put["review"]["source"] == "train" and put["review"]["given_label"] == given
        assert client.get(f"{base}/dynamics/reviews").json()["reviews"][str(idx)]["label"] == other
        bad = client.put(f"{base}/dynamics/reviews/{idx}", json={"verdict": "relabel", "label": given})
        assert bad.status_code == 422 and "already has" in bad.json()["detail"]
    finally:
        assert client.delete(f"{base}/dynamics/reviews/{idx}").json()["review"] is None
    assert str(idx) not in client.get(f"{base}/dynamics/reviews").json()["reviews"]
