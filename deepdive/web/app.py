"""`deepdive serve`: a FastAPI app over a workspace's run store.

    GET /                                                   the single-page front end
    GET /static/{name}                                      its scripts and styles (a fixed list), plotly.js
    GET /api/runs                                           runs, newest first, with their analysed splits
    GET /api/runs/{run_id}                                  one run
    GET /api/runs/{run_id}/epochs                           its per-epoch metrics (the runs page's comparison)
    GET /api/runs/{run_id}/steps                            what it logged per training step, by name (at most
                                                            STEP_POINTS points a name: longer series averaged)
    GET /api/runs/{run_id}/splits/{split}/bundle            everything the views show (see bundle.py)
    GET /api/runs/{run_id}/splits/{split}/sprites/{n}.png   thumbnail sprite sheet n
    GET .../saliency/{method}/row/{row}.png?target=C        signed map of `method` toward class C for one image
    GET .../saliency/{method}/class/{rep|mean|random}/{cls}.png   per-class map (random: weights shuffled)
    GET .../activations/{row}                               every layer's feature maps and statistics (JSON)
    GET .../neighbours/{row}                                its nearest training images with their labels (JSON)
    GET .../influence/{row}                                 an error's training images most against its label and
                                                            most for it (TracIn; JSON with their pictures);
                                                            POST .../probe/influence: a new picture's, toward the
                                                            class it should be or its answer
    GET .../robustness/{row}                                the smallest turn, shift, zoom, slant, thickness and
                                                            invisible change that flip its answer (an error's: make
                                                            it right), with the pictures so changed (JSON); POST
                                                            .../probe/robustness: a new picture's (toward the class
                                                            it should be)
    GET .../channels/{row}                                  the last feature map's channels that weigh most in its
                                                            answer, and where each fires on it (JSON)
    GET .../compare/{other_run_id}                          this run's mistakes against another's on the same images
    GET .../probe                                           whether and how the model takes a new picture (Try view)
    POST .../probe  {"image": data URI, "digit", "method", "expected"}   the model on that picture: probabilities,
                                                            saliency, activations; POST .../probe/neighbours: its
                                                            nearest training images
    GET .../reviews                                         people's verdicts on this split's labels, by row
    PUT .../reviews/{row}  {"verdict", "label"}             record one (relabel / keep / ambiguous); DELETE forgets it
    GET .../tags                                            the words people put on this split's images, by row
    PUT .../tags/{row}  {"tag"}                             put one on the image (DELETE with the same body: take
                                                            it off); both answer with the image's tags
    POST .../tags  {"rows", "tag", "remove"}                put one on many images (or take it off) at once;
                                                            answers with how many changed and all the tags
    GET .../dynamics/{idx}                                  one training image's answers at every epoch, its picture
    GET .../dynamics/pictures?idx=3,17,...                  training images' pictures (at most 200), by index
    GET .../dynamics/reviews                                people's verdicts on the training images, by index;
    PUT .../dynamics/reviews/{idx}  {"verdict", "label"}    record one; DELETE forgets it
    GET .../dynamics/tags                                   the words people put on the training images, by index;
    PUT .../dynamics/tags/{idx}  {"tag"}                    put one on (DELETE: take it off)
    POST .../dynamics/tags  {"idx", "tag", "remove"}        put one on many training images (or take it off) at
                                                            once; answers with how many changed and all the tags

No endpoint takes a file path: run ids must be ids the store knows, splits and methods come from fixed lists,
everything else is an integer, so `../` in any parameter can only yield a 4xx.
"""
import gzip
import re
import threading

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.middleware.gzip import GZipMiddleware

from deepdive.errors import DeepdiveError, RunError
from deepdive.web import page
from deepdive.web.bundle import STEP_POINTS, histogram_series
from deepdive.web.maps import NotFound, RunMaps

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
SERVED_CSP = ("default-src 'none'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
              "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'none'")
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


class RunCache:
    """Per (run, split): the loaded analysis, its bundle, sprite sheets and model maps. Rebuilt when the
    analysis is redone (summary.json changes)."""

    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()
        self._entries = {}

    def record(self, run_id: str):
        if not RUN_ID.match(run_id):
            raise HTTPException(404, f"no run {run_id!r}")
        try:
            rec = self.store.get_run(run_id)
        except RunError:
            raise HTTPException(404, f"no run {run_id!r} in this workspace") from None
        # Only exact ids: names and prefixes are for the CLI; a URL names one run.
        if rec.id != run_id or not rec.run_dir.resolve().is_relative_to(self.store.workspace):
            raise HTTPException(404, f"no run {run_id!r} in this workspace")
        return rec

    def forget(self, run_id: str):
        """Drop a run's entries (it was deleted or renamed)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == run_id]:
                del self._entries[key]

    def get(self, run_id: str, split: str) -> RunMaps:
        from deepdive.analysis.results import SPLITS, AnalysisResult, analysis_dir

        rec = self.record(run_id)
        if split not in SPLITS:
            raise HTTPException(404, f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        summary = analysis_dir(rec.run_dir, split) / "summary.json"
        try:
            stamp = summary.stat().st_mtime_ns
        except FileNotFoundError:
            raise HTTPException(404, f"run {run_id} has no analysis of its {split!r} split; run: "
                                     f"deepdive analyze {run_id} --split {split}") from None
        with self._lock:
            entry = self._entries.get((run_id, split))
            if entry is None or entry.stamp != stamp:
                entry = RunMaps(rec, AnalysisResult.load(rec.run_dir, split))
                entry.stamp = stamp
                self._entries[(run_id, split)] = entry
            return entry


class Review(BaseModel):
    verdict: str
    label: int | None = None


class Tag(BaseModel):
    tag: str


class Tagging(BaseModel):
    rows: list[int]
    tag: str
    remove: bool = False


class TrainingTagging(BaseModel):
    idx: list[int]
    tag: str
    remove: bool = False


class RunEdit(BaseModel):
    name: str | None = None
    notes: str | None = None


class Picture(BaseModel):
    image: str                  # data:image/png;base64,... (the Try view's canvas)
    digit: bool = False         # prepare it like an MNIST digit (fit into 20x20, centre by mass)
    method: str | None = None   # saliency method; None: no maps
    expected: int | None = None  # the class it should be: a second map, toward it


MAX_PICTURE_CHARS = 8_000_000   # a data URI; the canvas of a 224x224 RGB model is ~0.2 MB
MAX_PICTURE_PIXELS = 4096 * 4096  # a small file may decode to a huge image: checked before decoding
MAX_PICTURES = 200   # training images' pictures per request (a selection on the data map lists a page of them)


def _decode_picture(entry, picture: Picture):
    """The request's picture as the split's images are (uint8), or a DataError saying what is wrong with it."""
    import base64
    import binascii
    import io

    from deepdive.data.images import read_image
    from deepdive.errors import DataError

    head, _, payload = picture.image.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64")):
        raise DataError("the picture must be a data URI of an image (data:image/png;base64,...)")
    if len(payload) > MAX_PICTURE_CHARS:
        raise DataError(f"the picture is {len(payload) / 1e6:.1f} MB of base64; at most "
                        f"{MAX_PICTURE_CHARS / 1e6:.0f} MB are taken")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise DataError(f"the picture's base64 does not decode: {e}") from None
    return entry.prepared_picture(read_image(io.BytesIO(data), "the picture", MAX_PICTURE_PIXELS), picture.digit)


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


def create_app(workspace) -> FastAPI:
    from deepdive.malloc import keep_freed_memory_in_threads
    from deepdive.store import Store

    # the model passes served on request (a picture's training images behind its answer: 55,000 images in batches
    # of 2,000) allocate the same large blocks over and over, in worker threads; under glibc's defaults each one
    # page-faults anew (deepdive.malloc). The server keeps its peak memory. `deepdive serve` has already done this,
    # before any thread: here it helps an app made in a fresh process, and is a no-op after.
    keep_freed_memory_in_threads()
    store = Store.open(workspace, create=False)
    runs = RunCache(store)

    def row_entry(run_id: str, split: str, row: int):
        """The run's analysed split, `row` checked to be one of its rows (NotFound otherwise)."""
        entry = runs.get(run_id, split)
        entry.check_row(row)
        return entry

    app = FastAPI(title="deepdive", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)
    app.state.store = store
    static = {name: page.STATIC_DIR / name for name in (*page.SCRIPTS, *page.STYLES)}
    static[page.PLOTLY] = page.plotly_js_path()
    static_cache = {}

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(DeepdiveError)
    async def deepdive_error(request: Request, exc: DeepdiveError):
        return JSONResponse({"detail": str(exc)}, status_code=404 if isinstance(exc, RunError) else 422)

    @app.get("/", response_class=HTMLResponse)
    def index():
        config = {"mode": "served", "plotly_url": f"/static/{page.PLOTLY}"}
        html = page.render("served", "deepdive", {"dd-config": config}, inline=False)
        return HTMLResponse(html, headers={"Content-Security-Policy": SERVED_CSP, "Cache-Control": "no-cache"})

    @app.get("/static/{name}")
    def static_file(name: str, request: Request):
        if name not in static:
            raise HTTPException(404, "no such file")
        if name not in static_cache:  # read and gzip once: plotly.js is ~4.8 MB
            raw = static[name].read_bytes()
            static_cache[name] = (raw, gzip.compress(raw, compresslevel=6))
        raw, packed = static_cache[name]
        headers = {"Cache-Control": "public, max-age=3600"}
        media = STATIC_TYPES[static[name].suffix]
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(packed, media_type=media, headers={**headers, "Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        return Response(raw, media_type=media, headers=headers)

    @app.get("/api/runs")
    def list_runs():
        from deepdive.analysis.results import AnalysisResult

        return [{**_run_row(r), "splits": AnalysisResult.splits(r.run_dir)} for r in store.list_runs()]

    @app.delete("/api/runs/{run_id}")
    def delete_run(run_id: str):
        """Delete the run: its rows, its own images' reviews and its folder (Store.delete_run)."""
        rec = runs.record(run_id)
        try:
            freed = store.delete_run(rec.id)
        except RunError as e:      # it exists (record found it): still running
            raise HTTPException(409, str(e)) from None
        runs.forget(rec.id)
        return {"deleted": rec.id, "name": rec.name, "freed_bytes": freed}

    @app.patch("/api/runs/{run_id}")
    def edit_run(run_id: str, edit: RunEdit):
        """Rename the run and/or set its notes (Store.edit_run)."""
        rec = runs.record(run_id)
        try:
            rec = store.edit_run(rec.id, name=edit.name, notes=edit.notes)
        except RunError as e:      # it exists (record found it): the name or notes are refused
            raise HTTPException(422, str(e)) from None
        runs.forget(rec.id)        # its cached bundles carry the old name
        return _run_row(rec)

    @app.get("/api/runs/{run_id}")
    def get_run(run_id: str):
        from deepdive.analysis.results import AnalysisResult

        from deepdive.analysis.insight import early_stop

        rec = runs.record(run_id)
        return {**_run_row(rec), "config": rec.config, "data_source": rec.data_source,
                "splits": AnalysisResult.splits(rec.run_dir),
                "insight": early_stop(store.epochs(rec.id))}     # the early-stopping hint, as the analysis has it

    @app.get("/api/runs/{run_id}/epochs")
    def epochs(run_id: str):
        return store.epochs(runs.record(run_id).id)

    @app.get("/api/runs/{run_id}/steps")
    def steps(run_id: str):
        return store.steps(runs.record(run_id).id, max_points=STEP_POINTS)

    @app.get("/api/runs/{run_id}/histograms")
    def histograms(run_id: str):
        return histogram_series(store.histograms(runs.record(run_id).id))

    @app.get("/api/runs/{run_id}/splits/{split}/bundle")
    def bundle(run_id: str, split: str):
        entry = runs.get(run_id, split)
        return Response(entry.bundle_json(store, f"/api/runs/{run_id}/splits/{split}"), media_type="application/json")

    @app.get("/api/runs/{run_id}/splits/{split}/sprites/{sheet}.png")
    def sprite(run_id: str, split: str, sheet: int):
        return _png(runs.get(run_id, split).sprite(sheet))

    @app.get("/api/runs/{run_id}/splits/{split}/saliency/{method}/row/{row}.png")
    def saliency_row(run_id: str, split: str, method: str, row: int, target: int):
        entry = runs.get(run_id, split)
        entry.check_method(method)
        entry.check_row(row)
        entry.check_class(target)
        return _png(entry.saliency_png(method, row, target))

    @app.get("/api/runs/{run_id}/splits/{split}/saliency/{method}/class/{kind}/{cls}.png")
    def saliency_class(run_id: str, split: str, method: str, kind: str, cls: int):
        entry = runs.get(run_id, split)
        entry.check_method(method)
        entry.check_class(cls)
        if kind not in ("rep", "mean", "random"):
            raise HTTPException(404, "class map kind must be 'rep', 'mean' or 'random'")
        if kind == "random" and not entry.res.has(f"saliency_random:{method}"):
            raise HTTPException(404, f"the analysis has no {method} maps with shuffled weights (re-analyse for them)")
        return _png(entry.class_png(method, cls, kind))

    @app.get("/api/runs/{run_id}/splits/{split}/activations/{row}")
    def activations(run_id: str, split: str, row: int):
        return row_entry(run_id, split, row).activations(row, on_demand=True)

    @app.get("/api/runs/{run_id}/splits/{split}/neighbours/{row}")
    def neighbours(run_id: str, split: str, row: int):
        return row_entry(run_id, split, row).neighbours(row)

    @app.get("/api/runs/{run_id}/splits/{split}/influence/{row}")
    def influence(run_id: str, split: str, row: int):
        return row_entry(run_id, split, row).influence(row)

    @app.get("/api/runs/{run_id}/splits/{split}/robustness/{row}")
    def robustness(run_id: str, split: str, row: int):
        return row_entry(run_id, split, row).robustness(row)

    @app.get("/api/runs/{run_id}/splits/{split}/channels/{row}")
    def channels(run_id: str, split: str, row: int):
        return row_entry(run_id, split, row).channels(row)

    @app.get("/api/runs/{run_id}/splits/{split}/compare/{other}")
    def compare(run_id: str, split: str, other: str):
        from deepdive.analysis.compare import compare_runs
        from deepdive.analysis.results import SPLITS

        a, b = runs.record(run_id), runs.record(other)
        if split not in SPLITS:
            raise HTTPException(404, f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        return compare_runs(a, b, split, store=store)   # neither analysis nor predictions: RunError, 404

    @app.get("/api/runs/{run_id}/splits/{split}/probe")
    def probe_info(run_id: str, split: str):
        return runs.get(run_id, split).probe_info()

    @app.post("/api/runs/{run_id}/splits/{split}/probe")
    def probe(run_id: str, split: str, picture: Picture):
        entry = runs.get(run_id, split)
        return entry.probe(_decode_picture(entry, picture), picture.method, picture.expected)

    @app.post("/api/runs/{run_id}/splits/{split}/probe/neighbours")
    def probe_neighbours(run_id: str, split: str, picture: Picture):
        entry = runs.get(run_id, split)
        return entry.probe_neighbours(_decode_picture(entry, picture))

    @app.post("/api/runs/{run_id}/splits/{split}/probe/robustness")
    def probe_robustness(run_id: str, split: str, picture: Picture):
        entry = runs.get(run_id, split)
        return entry.probe_robustness(_decode_picture(entry, picture), picture.expected)

    @app.post("/api/runs/{run_id}/splits/{split}/probe/influence")
    def probe_influence(run_id: str, split: str, picture: Picture):
        entry = runs.get(run_id, split)
        return entry.probe_influence(_decode_picture(entry, picture), picture.expected)

    # Reviews live in the store, not the analysis: the bundle is cached, these are read and written afresh.
    @app.get("/api/runs/{run_id}/splits/{split}/reviews")
    def reviews(run_id: str, split: str):
        from deepdive.analysis.reviews import review_source, reviews_by_row

        entry = runs.get(run_id, split)
        by_row = reviews_by_row(store, entry.record, split, entry.res.examples)
        return {"source": review_source(entry.record, split), "reviews": {str(r): v for r, v in by_row.items()}}

    @app.put("/api/runs/{run_id}/splits/{split}/reviews/{row}")
    def put_review(run_id: str, split: str, row: int, review: Review):
        from deepdive.analysis.reviews import review_row

        entry = row_entry(run_id, split, row)
        return review_row(store, entry.record, split, entry.res.examples, entry.num_classes, row, review.verdict,
                          review.label)

    @app.delete("/api/runs/{run_id}/splits/{split}/reviews/{row}")
    def delete_review(run_id: str, split: str, row: int):
        from deepdive.analysis.reviews import review_row

        entry = row_entry(run_id, split, row)
        return review_row(store, entry.record, split, entry.res.examples, entry.num_classes, row, None)

    # Tags, like reviews, live in the store and belong to the image (deepdive.analysis.tags).
    @app.get("/api/runs/{run_id}/splits/{split}/tags")
    def tags(run_id: str, split: str):
        from deepdive.analysis.tags import tags_by_row

        entry = runs.get(run_id, split)
        return {"tags": {str(r): t for r, t in tags_by_row(store, entry.record, split, entry.res.examples).items()}}

    @app.post("/api/runs/{run_id}/splits/{split}/tags")
    def tag_many(run_id: str, split: str, tagging: Tagging):
        from deepdive.analysis.tags import tag_rows, tags_by_row

        entry = runs.get(run_id, split)
        changed = tag_rows(store, entry.record, split, entry.res.examples, tagging.rows, tagging.tag,
                           tagging.remove)
        return {"changed": changed,
                "tags": {str(r): t for r, t in tags_by_row(store, entry.record, split, entry.res.examples).items()}}

    @app.put("/api/runs/{run_id}/splits/{split}/tags/{row}")
    def put_tag(run_id: str, split: str, row: int, tag: Tag):
        from deepdive.analysis.tags import tag_row

        entry = row_entry(run_id, split, row)
        return tag_row(store, entry.record, split, entry.res.examples, row, tag.tag)

    @app.delete("/api/runs/{run_id}/splits/{split}/tags/{row}")
    def delete_tag(run_id: str, split: str, row: int, tag: Tag):
        from deepdive.analysis.tags import tag_row

        entry = row_entry(run_id, split, row)
        return tag_row(store, entry.record, split, entry.res.examples, row, tag.tag, remove=True)

    @app.get("/api/runs/{run_id}/splits/{split}/dynamics/pictures")
    def training_pictures(run_id: str, split: str, idx: str = ""):
        entry = runs.get(run_id, split)
        wanted = _picture_indices(idx)
        entry.training_positions(wanted)
        return entry.training_pictures(wanted)

    @app.get("/api/runs/{run_id}/splits/{split}/duplicates/pictures")
    def duplicate_pictures(run_id: str, split: str, idx: str = ""):
        return runs.get(run_id, split).duplicate_pictures(_picture_indices(idx))

    @app.get("/api/runs/{run_id}/splits/{split}/dynamics/reviews")
    def training_reviews(run_id: str, split: str):
        from deepdive.analysis.reviews import training_reviews

        entry = runs.get(run_id, split)
        return {"reviews": {str(i): v for i, v in training_reviews(store, entry.record).items()}}

    @app.get("/api/runs/{run_id}/splits/{split}/dynamics/tags")
    def training_tags(run_id: str, split: str):
        from deepdive.analysis.tags import training_tags

        entry = runs.get(run_id, split)
        return {"tags": {str(i): t for i, t in training_tags(store, entry.record).items()}}

    @app.post("/api/runs/{run_id}/splits/{split}/dynamics/tags")
    def tag_training(run_id: str, split: str, tagging: TrainingTagging):
        from deepdive.analysis.tags import tag_training_images, training_tags

        entry = runs.get(run_id, split)
        entry.training_positions(tagging.idx)      # every one an image the run trained on, or 404 and nothing
        changed = tag_training_images(store, entry.record, tagging.idx, tagging.tag, tagging.remove)
        return {"changed": changed, "tags": {str(i): t for i, t in training_tags(store, entry.record).items()}}

    def _tag_training(run_id, split, idx, tag, remove):
        from deepdive.analysis.tags import tag_training_image

        entry = runs.get(run_id, split)
        entry.training_position(idx)        # one of the images the run trained on, or 404
        return tag_training_image(store, entry.record, idx, tag, remove)

    @app.put("/api/runs/{run_id}/splits/{split}/dynamics/tags/{idx}")
    def put_training_tag(run_id: str, split: str, idx: int, tag: Tag):
        return _tag_training(run_id, split, idx, tag.tag, False)

    @app.delete("/api/runs/{run_id}/splits/{split}/dynamics/tags/{idx}")
    def delete_training_tag(run_id: str, split: str, idx: int, tag: Tag):
        return _tag_training(run_id, split, idx, tag.tag, True)

    @app.get("/api/runs/{run_id}/splits/{split}/dynamics/{idx}")
    def training_dynamics(run_id: str, split: str, idx: int):
        return runs.get(run_id, split).training_dynamics(idx)

    def _review_training(run_id, split, idx, verdict, label):
        from deepdive.analysis.reviews import review_training_image

        entry = runs.get(run_id, split)
        table = entry.dynamics_data()[0]
        given = int(table["given"].iat[entry.training_position(idx)])
        return review_training_image(store, entry.record, given, entry.num_classes, idx, verdict, label)

    @app.put("/api/runs/{run_id}/splits/{split}/dynamics/reviews/{idx}")
    def put_training_review(run_id: str, split: str, idx: int, review: Review):
        return _review_training(run_id, split, idx, review.verdict, review.label)

    @app.delete("/api/runs/{run_id}/splits/{split}/dynamics/reviews/{idx}")
    def delete_training_review(run_id: str, split: str, idx: int):
        return _review_training(run_id, split, idx, None, None)

    return app


def _picture_indices(idx: str) -> list[int]:
    """A pictures request's comma-separated training-image indices, at most MAX_PICTURES of them (422 otherwise)."""
    try:
        wanted = [int(i) for i in idx.split(",") if i.strip()]
    except ValueError:
        raise HTTPException(422, "idx must be comma-separated training-image indices") from None
    if len(wanted) > MAX_PICTURES:
        raise HTTPException(422, f"at most {MAX_PICTURES} pictures per request, asked for {len(wanted)}")
    return wanted


def _run_row(r) -> dict:
    keys = ("id", "name", "dataset", "status", "model_arch", "num_params", "test_accuracy", "train_seconds",
            "device", "created_at", "finished_at", "notes")
    return {**{k: getattr(r, k) for k in keys}, "recipe": r.recipe_text, "recipe_group": r.recipe_group,
            "resumable": r.resumable, "params": r.params}
