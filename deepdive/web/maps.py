"""One analysed split as the web serves it: bundle, sprite sheets, saliency and activation images.

Precomputed analysis arrays are used where they exist (errors, class maps, the activation focus set); anything
else is computed on demand with the run's model (loaded once per run, shared by its splits). All images are
rendered with deepdive.analysis.render so the dashboard and the analysis share one colour scale.
"""
import io
import json
import threading
from collections import OrderedDict

import numpy as np

from deepdive.web import bundle as bundle_mod
from deepdive.web.page import jsonable

SAL_SIZE = 112         # px of a saliency overlay served on demand
_MODEL_LOCK = threading.Lock()
_MODELS = OrderedDict()  # (checkpoint path, mtime) -> model; the last few runs looked at
_MAX_MODELS = 3


class NotFound(LookupError):
    """A request names something this split does not have (row, class, method, sheet)."""


def run_model(run_dir):
    """The run's best checkpoint as a CPU model, cached per run (None when it cannot be loaded)."""
    from deepdive.errors import RunError
    from deepdive.models import load_checkpoint

    path = run_dir / "model_best.pt"
    try:
        key = (str(path), path.stat().st_mtime_ns)
    except FileNotFoundError:
        return None
    with _MODEL_LOCK:
        if key not in _MODELS:
            try:
                _MODELS[key] = load_checkpoint(path, device="cpu")
            except RunError:
                return None
            while len(_MODELS) > _MAX_MODELS:
                _MODELS.popitem(last=False)
        _MODELS.move_to_end(key)
        return _MODELS[key]


def training_images(record) -> np.ndarray:
    """uint8 training images of the run (the neighbours' pictures): its dataset's, or for a run logged with
    log_evaluation(train_data=...) its stored ones as they display; the last two sets kept."""
    from deepdive.analysis import _dataset, display_images, stored_inputs
    from deepdive.errors import DeepdiveError

    folder = record.run_dir / "eval"
    if record.dataset == "custom":
        key = ("custom", str(folder))
    else:
        src = record.data_source or {}
        key = (record.dataset, src.get("location") if src.get("kind") == "data-dir" else None)

    def load():
        try:
            if record.dataset == "custom":
                stored = stored_inputs.load(folder, "train")
                if stored is None:
                    raise OSError(f"no training images stored in {folder}")
                return display_images(stored.read())
            return _dataset(record).train_images
        except (DeepdiveError, OSError) as e:   # e.g. a --data-dir that is gone: the rest of the page still works
            raise NotFound(f"the training images of run {record.id} cannot be loaded: {e}") from None

    return _DATASETS.get(key, load)


class _Cache:
    """A small thread-safe LRU of rendered images: `get(key, make)` returns the cached value or stores make()."""

    def __init__(self, size):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key, make):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()  # outside the lock: rendering (or a model call) may take a while
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


_DATASETS = _Cache(2)


class RunMaps:
    def __init__(self, record, res):
        self.record, self.res = record, res
        self.stamp = None
        self._bundle_lock, self._sprite_lock = threading.Lock(), threading.Lock()  # a slow sprite never blocks the bundle
        self._bundle = None
        self._sprites = {}
        self._pngs = _Cache(4096)   # rendered PNGs
        self._maps = _Cache(1024)   # saliency arrays computed on demand
        self._sal = {}
        self._acts = None
        self._neighbours = None
        frame = res.examples
        self.n = len(frame)
        self.num_classes = res.num_classes
        self.true = frame["true"].to_numpy()
        self.pred = frame["pred"].to_numpy()
        self.methods = res.saliency_methods
        self.sheet_count = len(bundle_mod.sprite_layout(self.n, 1, 1)["sheet_sizes"])

    # ---- validation (every request parameter goes through one of these) --------------------------------
    def check_row(self, row: int):
        if not 0 <= row < self.n:
            raise NotFound(f"row {row} is outside 0..{self.n - 1}")

    def check_class(self, cls: int):
        if not 0 <= cls < self.num_classes:
            raise NotFound(f"class {cls} is outside 0..{self.num_classes - 1}")

    def check_method(self, method: str):
        if method not in self.methods:
            raise NotFound(f"no {method!r} saliency; this analysis has: {', '.join(self.methods) or 'none'}")

    # ---- bundle and sprites ------------------------------------------------------------------------------
    def bundle(self, store, *, sheets, activation_rows, activation_mode) -> dict:
        return bundle_mod.build(store, self.record, self.res, sheets=sheets, legend=legend_uri(),
                                activation_rows=activation_rows, activation_mode=activation_mode)

    def bundle_json(self, store, base_url: str) -> str:
        """The served bundle (image fields are URLs under base_url), built once and kept as JSON text."""
        with self._bundle_lock:
            if self._bundle is None:
                b = self.bundle(store, sheets=[f"{base_url}/sprites/{k}.png" for k in range(self.sheet_count)],
                                activation_rows=[], activation_mode="on-demand")
                b["urls"] = {"base": base_url}
                self._bundle = json.dumps(jsonable(b), separators=(",", ":"), allow_nan=False)
            return self._bundle

    def sprite(self, sheet: int) -> bytes:
        if not 0 <= sheet < self.sheet_count:
            raise NotFound(f"no sprite sheet {sheet}")
        with self._sprite_lock:
            if sheet not in self._sprites:
                self._sprites[sheet] = bundle_mod.sprite_sheet(self.res.images, sheet)
            return self._sprites[sheet]

    # ---- saliency -------------------------------------------------------------------------------------------
    def _saliency(self, method):
        if method not in self._sal:
            self._sal[method] = self.res.saliency(method)
        return self._sal[method]

    def precomputed_saliency(self, method: str, row: int, target: int):
        """The stored map for (row, target) if the analysis computed it, else None."""
        sal = self._saliency(method)
        hits = np.flatnonzero(np.asarray(sal["errors_index"]) == row)
        if len(hits):
            k = int(hits[0])
            if target == self.pred[row]:
                return np.asarray(sal["errors"][k, 0], dtype=np.float32)
            if target == self.true[row]:
                return np.asarray(sal["errors"][k, 1], dtype=np.float32)
        rep = np.asarray(sal["class_rep_index"])
        if 0 <= target < len(rep) and rep[target] == row:
            return np.asarray(sal["class_rep"][target], dtype=np.float32)
        return None

    def saliency_map(self, method: str, row: int, target: int) -> np.ndarray:
        """The signed map of `method` toward class `target` for image `row`: stored, else computed (and cached)."""
        def make():
            attr = self.precomputed_saliency(method, row, target)
            if attr is not None:
                return attr
            from deepdive.analysis.saliency import attribute

            model = self._model()
            with _MODEL_LOCK:
                return attribute(model, self.inputs([row]), [target], method)[0]

        return self._maps.get((method, row, target), make)

    def saliency_png(self, method: str, row: int, target: int, size: int = SAL_SIZE) -> bytes:
        """Overlay of `method`'s map toward class `target` on image `row`. The predicted- and the true-class
        maps of an image share one colour scale, so their strengths compare."""
        def make():
            from deepdive.analysis import render

            pair = {int(self.pred[row]), int(self.true[row])}
            maps = [self.saliency_map(method, row, c) for c in (pair if target in pair else {target})]
            return render.overlay_png(np.asarray(self.res.images[row]), self.saliency_map(method, row, target),
                                      size=size, scale=render.shared_scale(*maps))

        return self._pngs.get(("row", method, row, target, size), make)

    def class_png(self, method: str, cls: int, kind: str, size: int = SAL_SIZE) -> bytes:
        """The class's map over its representative image (kind 'rep'), the same with the model's weights shuffled
        (kind 'random', the sanity check), or its mean map over its mean image (kind 'mean')."""
        def make():
            from deepdive.analysis import render

            sal = self._saliency(method)
            maps = self.res.saliency_random(method) if kind == "random" else \
                sal["class_rep" if kind == "rep" else "class_mean"]
            attr = np.asarray(maps[cls], dtype=np.float32)
            rep = int(np.asarray(sal["class_rep_index"])[cls])
            base = self.res.images[rep] if kind != "mean" and rep >= 0 else self._class_mean_image(cls)
            return render.overlay_png(np.asarray(base), attr, size=size)

        return self._pngs.get(("class", method, cls, kind, size), make)

    def _class_mean_image(self, cls):
        rows = np.flatnonzero(self.true == cls)
        if not len(rows):
            return np.zeros(self.res.images.shape[1:], dtype=np.uint8)
        return np.asarray(self.res.images[rows], dtype=np.float32).mean(axis=0).astype(np.uint8)

    # ---- activations ----------------------------------------------------------------------------------------
    def activations(self, row: int, *, on_demand: bool):
        """{row, source, layers: [{name, type, shape, stats, image}]} for one image: from the stored focus set,
        else (on_demand) computed with the model; None when neither is possible."""
        stored = self._stored_activations(row)
        if stored is not None:
            return stored
        if not on_demand:
            return None
        from deepdive.analysis.activations import compute

        model = self._model()
        with _MODEL_LOCK:
            layers = compute(model, self.inputs([row])[0])
        return {"row": row, "source": "computed", "layers": [
            layer_view(layer["name"], layer["type"], layer["shape"], layer["maps"], layer["stats"]) for layer in layers]}

    def _stored_activations(self, row):
        if not self.res.has("activations"):
            return None
        focus = list(np.asarray(self.res.focus_indices))
        if row not in focus:
            return None
        k = focus.index(row)
        if self._acts is None:
            self._acts = self.res.activations()
        acts = self._acts
        out = []
        for i, layer in enumerate(acts["layers"]):
            maps = np.asarray(acts["arrays"][layer["name"]][k], dtype=np.float32)
            per_example = (acts["stats"].get("per_example") or {}).get(str(row))
            stats = per_example[i] if per_example and i < len(per_example) else {}
            out.append(layer_view(layer["name"], layer["type"], layer["shape"], maps, stats))
        return {"row": row, "source": "precomputed", "layers": out}

    # ---- nearest training images ----------------------------------------------------------------------------
    def neighbours(self, row: int) -> dict:
        """{row, reference, reading, items: [{idx, label, similarity, image}]}: the row's nearest training images,
        most similar first, each a PNG data URI at native resolution (the page scales it up, pixelated); reading:
        which answer they back (the examples table's neighbours column, deepdive.analysis.neighbours.readings)."""
        if not self.res.has("neighbours"):
            reason = (self.res.summary.get("neighbours") or {}).get("reason") or \
                "this analysis has no nearest training images (re-run: deepdive analyze)"
            raise NotFound(reason)
        if self._neighbours is None:
            self._neighbours = self.res.neighbours()
        nb = self._neighbours
        index = np.asarray(nb["index"][row], dtype=np.int64)
        images = training_images(self.record)
        if index.max(initial=-1) >= len(images):
            raise NotFound(f"the training images of run {self.record.id} no longer match its analysis "
                           "(re-run: deepdive analyze)")
        return {"row": row, "reference": (self.res.summary.get("neighbours") or {}).get("reference", ""),
                "reading": str(self.res.examples["neighbours"].iat[row]),   # as the analysis stored it
                "items": [{"idx": int(i), "label": int(c), "similarity": round(float(v), 4),
                           "image": bundle_mod.data_uri(bundle_mod.png_bytes(images[i]))}
                          for i, c, v in zip(index, nb["label"][row], nb["similarity"][row])]}

    # ---- model inputs ---------------------------------------------------------------------------------------
    def _model(self):
        model = run_model(self.record.run_dir)
        if model is None:
            raise NotFound(f"the model of run {self.record.id} cannot be loaded, so only the precomputed maps "
                           "are available")
        return model

    def inputs(self, rows) -> np.ndarray:
        """float32 (len(rows), C, H, W) in the scale the model expects: the run's stored evaluation inputs when it
        was logged by log_evaluation, else images / 255."""
        from deepdive.analysis import stored_inputs

        stored = stored_inputs.load(self.record.run_dir / "eval", self.res.split)
        if stored is not None:
            return stored[rows]
        x = np.asarray(self.res.images[rows], dtype=np.float32) / 255.0
        return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)


# ---- rendering (deepdive.analysis.render) -------------------------------------------------------------------
def display_stats(stats: dict, shape) -> dict:
    """The per-layer numbers of deepdive.analysis.activations as short labelled strings."""
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}%"

    def num(v):
        return "–" if v is None else f"{v:.3f}"

    out = {"active units": pct(stats.get("active_fraction"))}
    dead = stats.get("dead_channels")
    if dead is not None:
        out["dead channels"] = f"{len(dead)} of {shape[0]}"
    if stats.get("input_corr_max") is not None:
        out["|r| with the input, max / mean"] = f"{num(stats['input_corr_max'])} / {num(stats.get('input_corr_mean'))}"
    return out


def layer_view(name, kind, shape, maps, stats) -> dict:
    """One layer for the page: its numbers and its feature maps as a PNG grid at native resolution (the page
    scales it up, pixelated), reduced to a 64-colour palette: a third of the bytes, indistinguishable here."""
    from PIL import Image

    from deepdive.analysis import render

    png = render.grid_png(np.asarray(maps, dtype=np.float32), zoom=1, pad=1)
    grid = Image.open(io.BytesIO(png)).quantize(64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return {"name": name, "type": kind, "shape": list(shape), "stats": display_stats(stats or {}, list(shape)),
            "image": bundle_mod.data_uri(buf.getvalue())}


_LEGEND = {}


def legend_uri() -> str:
    """The diverging colour bar; ±1 stands for each map pair's own scale (its 99th percentile of |attr|)."""
    if "uri" not in _LEGEND:
        from deepdive.analysis import render

        _LEGEND["uri"] = bundle_mod.data_uri(render.colorbar_png(1.0))
    return _LEGEND["uri"]
