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

from deepdive.analysis.results import pictures_as_inputs
from deepdive.errors import RunError
from deepdive.web import bundle as bundle_mod
from deepdive.web.page import jsonable

SAL_SIZE = 112         # px of a saliency overlay served on demand
FRAGILE_SHOWN = 12     # per family, the most easily fooled right answers whose pictures the bundle inlines
ERRORS_SHOWN = 60      # errors whose pictures (changed toward their label) the bundle inlines
_MODEL_LOCK = threading.Lock()
_MODELS = OrderedDict()  # (checkpoint path, mtime) -> model; the last few runs looked at
_MAX_MODELS = 3


class NotFound(LookupError):
    """A request names something this split does not have (row, class, method, sheet)."""


def run_model(run_dir):
    """The run's best checkpoint as a CPU model, cached per run (None when it cannot be loaded)."""
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
_FEATURES = _Cache(1)   # the training features of the last run probed (the demo's: 253 MB)


def neighbour_items(images, index, labels, values, key="similarity") -> list[dict]:
    """Training images for the page (the nearest, those behind an error): [{idx, label, <key>: value, image}], each
    a PNG data URI at native resolution (the page scales it up, pixelated)."""
    return [{"idx": int(i), "label": int(c), key: round(float(v), 4),
             "image": bundle_mod.data_uri(bundle_mod.png_bytes(images[i]))}
            for i, c, v in zip(index, labels, values)]


def robustness_item(table, pictures, k: int, f: int) -> dict:
    """One family's entry for picture k of the robustness table (its rows repeat per family, in the order of the
    FAMILIES of the analysis that wrote it; an earlier analysis may hold fewer)."""
    line = table.iloc[f * len(pictures) + k]
    return {"id": line["family"], "size": _size_or_none(line["size"]), "variant": line["variant"],
            "into": int(line["into"]), "image": bundle_mod.data_uri(bundle_mod.png_bytes(pictures[k, f]))}


def _size_or_none(size) -> float | None:
    """A robustness size for JSON: None where nothing in range flipped it (NaN)."""
    size = float(size)
    return None if np.isnan(size) else round(size, 4)


class RunMaps:
    def __init__(self, record, res):
        self.record, self.res = record, res
        self.stamp = None
        self._bundle_lock, self._sprite_lock = threading.Lock(), threading.Lock()  # a slow sprite never blocks the bundle
        self._bundle = None
        self._sprites = {}
        self._pngs = _Cache(4096)   # rendered PNGs
        self._maps = _Cache(1024)   # saliency arrays computed on demand
        self._acts = None
        self._neighbours = None
        self._influence = None       # (the stored arrays, {error row: its position in them})
        self._robustness = None      # (table, pictures, {row: its position in the pictures}): what fools the model
        self._scale = None           # the split's display scale (probe pictures go through its inverse)
        self._channel_errors = None  # row -> the stored errors' channel contributions
        self._dynamics = None        # (per-image table, raw per-epoch arrays, idx sort order): training dynamics
        self._probe_info = None
        self._head_layer = None      # (model, the layer its head reads): deepdive.analysis.channels.head_input_layer
        frame = res.examples
        self.n = len(frame)
        self.num_classes = res.num_classes
        self.true = frame["true"].to_numpy()
        self.pred = frame["pred"].to_numpy()
        self.methods = res.saliency_methods
        self.sheet_count = len(bundle_mod.sprite_layout(self.n, 1, 1)["sheet_sizes"])

    def _unavailable(self, piece: str, lacks: str) -> NotFound:
        """NotFound for a piece this analysis lacks: the reason its summary entry gives, else "this analysis
        <lacks> (re-run: deepdive analyze)"."""
        return NotFound((self.res.summary.get(piece) or {}).get("reason") or
                        f"this analysis {lacks} (re-run: deepdive analyze)")

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
        b = bundle_mod.build(store, self.record, self.res, sheets=sheets, legend=legend_uri(),
                             activation_rows=activation_rows, activation_mode=activation_mode)
        b["dynamics"] = self.dynamics_bundle()
        b["duplicates"] = self.duplicates_bundle()
        b["influence"] = self.influence_bundle()
        b["robustness"] = self.robustness_bundle()
        return b

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
    def saliency_map(self, method: str, row: int, target: int) -> np.ndarray:
        """The signed map of `method` toward class `target` for image `row`: stored, else computed (and cached)."""
        def make():
            attr = self.res.stored_saliency(method, row, target)
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

            sal = self.res.saliency(method)
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
                "items": neighbour_items(images, index, nb["label"][row], nb["similarity"][row])}

    # ---- the training images behind each error (deepdive.analysis.influence) -----------------------------------
    def influence_data(self):
        """(stored arrays, {error row: position}); NotFound saying why when the analysis has none."""
        if not self.res.has("influence"):
            raise self._unavailable("influence", "has no training images behind its errors")
        if self._influence is None:
            inf = self.res.influence()
            self._influence = (inf, {int(r): k for k, r in enumerate(np.asarray(inf["rows"]))})
        return self._influence

    def influence(self, row: int) -> dict:
        """{row, against: [{idx, label, score, image}], for: [...]}: the training images most against the row's label
        (they pushed it toward the mistake) and most for it, most influential first (TracIn scores)."""
        inf, at = self.influence_data()
        if row not in at:
            raise NotFound(f"row {row} is not one of the {len(at)} errors whose training images the analysis weighed")
        k, images = at[row], training_images(self.record)
        out = {"row": row}
        for side in ("against", "for"):
            index = np.asarray(inf[f"{side}_index"][k], np.int64)
            if index.max(initial=-1) >= len(images):
                raise NotFound(f"the training images of run {self.record.id} no longer match its analysis "
                               "(re-run: deepdive analyze)")
            out[side] = neighbour_items(images, index, inf[f"{side}_label"][k], inf[f"{side}_score"][k], "score")
        return out

    def influence_bundle(self) -> dict:
        """{available, rows: the error rows weighed, against: [[dataset index] x K per row], pictures: {idx: data
        URI} of the training images the summary lists behind the most errors} (inlined in both modes), or
        {available: false, reason}."""
        try:
            inf, at = self.influence_data()
        except NotFound as e:
            return {"available": False, "reason": str(e)}
        # rows in the stored order (most confident error first), each with the dataset indices of its K training
        # images most against its label: the page lists the errors a training image is behind
        out = {"available": True, "rows": np.asarray(inf["rows"]).tolist(),
               "against": np.asarray(inf["against_index"]).tolist(), "pictures": {}}
        behind = [item[0] for item in (self.res.summary.get("influence") or {}).get("behind", [])]
        try:
            out["pictures"] = self.training_pictures(behind)
        except NotFound as e:
            out["pictures_note"] = str(e)
        return out

    # ---- what fools the model (deepdive.analysis.robustness) --------------------------------------------------
    def robustness_data(self):
        """(table, pictures, {row: position}); NotFound saying why when the analysis has none."""
        if not self.res.has("robustness"):
            raise self._unavailable("robustness", "has nothing on what fools the model")
        if self._robustness is None:
            from deepdive.analysis.robustness import FAMILY_IDS

            table = self.res.robustness()
            first = table[table["family"] == FAMILY_IDS[0]]["row"].to_numpy()
            self._robustness = (table, self.res.robustness_pictures(), {int(r): k for k, r in enumerate(first)})
        return self._robustness

    def robustness(self, row: int) -> dict:
        """{row, mending, families: [{id, size, variant, into, image}]}: the smallest change of each family that
        flips the row's answer (or, for an error, makes it right) and the picture so changed (size None: nothing
        in range did; image then the picture itself)."""
        table, pictures, at = self.robustness_data()
        if row not in at:
            raise NotFound(f"row {row} is not one of the {len(at)} pictures the analysis tried to fool")
        k = at[row]
        return {"row": row, "mending": bool(table["mending"].iat[k]),
                "families": [robustness_item(table, pictures, k, f) for f in range(len(pictures[k]))]}

    def robustness_bundle(self) -> dict:
        """{available, rows (the pictures tried: right answers, then from `errors_from` on the errors), size / into
        ({family: [per row]}), variant ({family: {names, codes (per row, -1: none)}}), pictures ({row: [data URI per
        family]} for the FRAGILE_SHOWN most easily fooled right answers of each family and the first ERRORS_SHOWN
        errors, inlined in both modes)}, or {available: false, reason}. Compact: the whole test set tried
        (--robustness-sample 10000) comes to ~0.7 MB. The families are the table's own, in its order: an analysis
        written before slants and the pen holds four."""
        try:
            table, pictures, at = self.robustness_data()
        except NotFound as e:
            return {"available": False, "reason": str(e)}
        n = len(at)
        rows, mending = table["row"].to_numpy()[:n], table["mending"].to_numpy()[:n]
        out = {"available": True, "rows": rows.tolist(), "errors_from": int((~mending).sum()), "size": {},
               "variant": {}, "into": {}}
        shown = set(rows[mending][:ERRORS_SHOWN].tolist())
        for f, fam in enumerate(dict.fromkeys(table["family"])):
            part = table.iloc[f * n:(f + 1) * n]
            size = part["size"].to_numpy(np.float64)
            out["size"][fam] = [_size_or_none(v) for v in size]
            names, codes = np.unique(part["variant"].to_numpy(str), return_inverse=True)
            empty = names == ""
            out["variant"][fam] = {"names": names.tolist(),
                                   "codes": np.where(empty[codes], -1, codes).astype(int).tolist()}
            out["into"][fam] = part["into"].astype(int).tolist()
            fool = np.flatnonzero(~mending & ~np.isnan(size))
            shown.update(rows[fool[np.argsort(size[fool], kind="stable")][:FRAGILE_SHOWN]].tolist())
        out["pictures"] = {str(r): [bundle_mod.data_uri(bundle_mod.png_bytes(p)) for p in pictures[at[r]]]
                           for r in sorted(shown)}
        return out

    # ---- training dynamics (deepdive.analysis.dynamics) -------------------------------------------------------
    def dynamics_data(self):
        """(per-image table, the per-epoch arrays behind it, their idx sort order), loaded once for the bundle and
        the requests after it; NotFound saying why when the analysis has none or the run's no longer match it."""
        if self._dynamics is None:
            from deepdive.analysis import dynamics

            if not self.res.has("dynamics"):
                raise self._unavailable("dynamics", "has no training dynamics")
            table = self.res.dynamics()
            try:
                raw = dynamics.load_for(self.record.run_dir, table)
            except RunError as e:
                raise NotFound(str(e)) from None
            self._dynamics = (table, raw, np.argsort(raw["idx"], kind="stable"))
        return self._dynamics

    def dynamics_bundle(self) -> dict:
        """The bundle's dynamics block (bundle.dynamics_block) with the listed training images' pictures, inlined
        in both modes (~250 of them), or {available: False, reason}."""
        try:
            table, raw, _ = self.dynamics_data()
        except NotFound as e:
            return {"available": False, "reason": str(e)}
        dyn = bundle_mod.dynamics_block(self.res.summary.get("dynamics") or {}, table, raw)
        listed = sorted({item["idx"] for key in bundle_mod.DYNAMICS_LISTS for item in dyn[key]})
        try:
            dyn["pictures"] = self.training_pictures(listed)
        except NotFound as e:
            dyn["pictures"], dyn["pictures_note"] = {}, str(e)
        return dyn

    def listed_twins(self) -> list[int]:
        """The training twins of the near-duplicates the analysis listed (deepdive.analysis.duplicates), in order."""
        return [item[1] for item in ((self.res.summary.get("duplicates") or {}).get("train") or {}).get("listed", [])]

    def duplicate_pictures(self, idxs) -> dict:
        """{idx: PNG data URI} of listed training twins (listed_twins); NotFound for any other index, so this serves
        no training image the near-duplicates do not name."""
        listed = set(self.listed_twins())
        other = [i for i in idxs if i not in listed]
        if other:
            raise NotFound(f"training image {other[0]} is not a listed near-duplicate's twin in this analysis")
        return self.training_pictures(idxs)

    def duplicates_bundle(self) -> dict:
        """{pictures: {idx: data URI}}: the training twins of the first bundle.DUPLICATE_PICTURES near-duplicates
        the analysis listed (deepdive.analysis.duplicates), inlined in both modes; {} without any."""
        listed = self.listed_twins()[:bundle_mod.DUPLICATE_PICTURES]
        if not listed:
            return {"pictures": {}}
        try:
            return {"pictures": self.training_pictures(listed)}
        except NotFound as e:
            return {"pictures": {}, "pictures_note": str(e)}

    def training_position(self, idx: int) -> int:
        """The column of training image `idx` in the run's dynamics; NotFound if the run did not train on it."""
        return int(self.training_positions([idx])[0])

    def training_positions(self, idxs) -> np.ndarray:
        """training_position of each of `idxs` at once (NotFound naming the first the run did not train on)."""
        table, raw, order = self.dynamics_data()
        try:
            idxs = np.asarray(idxs, dtype=np.int64)
        except OverflowError:
            raise NotFound("a training image index is out of range") from None
        pos = order[np.searchsorted(raw["idx"], idxs, sorter=order).clip(0, len(order) - 1)]
        bad = idxs[raw["idx"][pos] != idxs]
        if len(bad):
            raise NotFound(f"training image {int(bad[0])} is not one run {self.record.id} trained on")
        return pos

    def training_pictures(self, idxs) -> dict:
        """{idx: PNG data URI} of training images of the run's dataset."""
        images = training_images(self.record)
        return {str(int(i)): bundle_mod.data_uri(bundle_mod.png_bytes(images[int(i)])) for i in idxs}

    def training_dynamics(self, idx: int) -> dict:
        """{idx, picture, image} for one training image: image is bundle.dynamics_item, its row of the dynamics
        table with its trajectory (epoch, member, p_true, margin, pred per kept epoch)."""
        pos = self.training_position(idx)
        table, raw, _ = self.dynamics_data()
        try:
            picture = self.training_pictures([idx])[str(idx)]
        except NotFound:     # a run logged without its train_data: the readings still tell
            picture = None
        return {"idx": idx, "picture": picture, "image": bundle_mod.dynamics_item(table.iloc[pos], raw, pos)}

    # ---- channels of the last feature map (deepdive.analysis.channels) --------------------------------------
    def channels(self, row: int) -> dict:
        """{row, other, toward, against, maps}: the channels that weigh most for the row's prediction over its other
        class (its label if wrong, else the runner-up), stored for the errors, else computed; maps: {channel: data
        URI} where each of them fires on the image (its map upsampled onto the image)."""
        from deepdive.analysis.channels import other_class

        if not self.res.has("channels"):
            raise self._unavailable("channels", "has no channels")
        probs = self.res.examples[[f"p{c}" for c in range(self.num_classes)]].to_numpy()[row:row + 1]
        other = int(other_class(probs, self.true[row:row + 1])[0])
        if self._channel_errors is None:
            ch = self.res.channels()
            self._channel_errors = {int(r): np.asarray(c) for r, c in zip(ch["errors_index"], ch["errors"])}
        weighed = self._weigh_channels(self.inputs([row]), np.asarray(self.res.images[row]), int(self.pred[row]),
                                       other, self._channel_errors.get(row))
        return {"row": row, "other": other, **weighed}

    def _weigh_channels(self, x, image, target: int, other: int, contributions=None) -> dict:
        """{toward, against, maps} for one input x (1, C, H, W): the channels that lift `target` over `other` most
        and least (contributions computed unless given), each with where it fires over `image`."""
        import torch
        import torch.nn.functional as F

        from deepdive.analysis import render
        from deepdive.analysis.activations import forward_with_hooks
        from deepdive.analysis.channels import ChannelContributions, head_input_layer, strongest

        model = self._model()
        x = torch.as_tensor(x)
        with _MODEL_LOCK:
            if self._head_layer is None or self._head_layer[0] is not model:   # found once per loaded model
                self._head_layer = (model, head_input_layer(model, x))
            layer = self._head_layer[1]
            if contributions is None:
                contributions = ChannelContributions(model, layer).attribute(x.numpy(), [target], [other])[0]
            captured = []
            forward_with_hooks(model, x, [(layer, lambda m, a, out: captured.append(out.detach().float()))])
        weighed = strongest(contributions)
        fmap = captured[0][0]                                    # (K, h, w)
        maps = {}
        for k, _ in weighed["toward"] + weighed["against"]:
            up = F.interpolate(fmap[k][None, None], size=image.shape[:2], mode="bilinear", align_corners=False)
            maps[str(k)] = bundle_mod.data_uri(render.overlay_png(image, up[0, 0].numpy(), size=56,
                                                                  scale=max(float(fmap[k].max()), 1e-6)))
        return {**weighed, "maps": maps}

    # ---- a picture from outside the split (the Try view, deepdive.analysis.probe) ----------------------------
    def probe_info(self) -> dict:
        """What the Try view needs before its first picture: {available, reason, channels, height, width, digit
        (pictures may be prepared like MNIST digits), digit_default, neighbours (the run has training images),
        influence (its analysis weighed them: the model has one last layer)}."""
        if self._probe_info is not None:
            return self._probe_info
        shape = tuple(self.inputs([0]).shape[1:]) if self.n else ()
        info = {"available": False, "reason": "", "channels": shape[0] if shape else 0,
                "height": shape[1] if shape else 0, "width": shape[2] if shape else 0,
                "digit": shape == (1, 28, 28), "digit_default": self.record.dataset == "mnist",
                "neighbours": bool((self.res.summary.get("neighbours") or {}).get("available")),
                "influence": bool((self.res.summary.get("influence") or {}).get("available"))}
        if run_model(self.record.run_dir) is None:
            info["reason"] = f"the model of run {self.record.id} cannot be loaded, so it cannot look at new pictures"
        elif len(shape) != 3 or shape[0] not in (1, 3):
            info["reason"] = f"the model takes inputs of shape {shape}: only 1- or 3-channel images can be drawn"
        else:
            info["available"] = True
        self._probe_info = info
        return info

    def _shown_inputs(self, shown: np.ndarray) -> np.ndarray:
        """Pictures as shown, float (N, C, H, W) in [0, 1], as the model's inputs: the inverse of how this split's
        inputs are displayed (deepdive.analysis.display_scale); the pictures themselves for a built-in dataset."""
        from deepdive.analysis import display_scale, inputs_from_display
        from deepdive.analysis.probe import input_field

        if self._scale is None:
            field = input_field(self.record.run_dir, self.res.split)
            self._scale = field[1] if field else display_scale(self.inputs([0]))
        return inputs_from_display(shown, self._scale)

    def prepared_picture(self, image, digit: bool) -> np.ndarray:
        """A decoded picture (PIL) as this split's images are: uint8 (H, W) or (H, W, 3). digit: fitted and centred
        like an MNIST digit (deepdive.data.images.prepare_digit; 28x28 one-channel inputs only)."""
        from deepdive.data.images import fit_picture, prepare_digit
        from deepdive.errors import DataError

        info = self.probe_info()
        if not info["available"]:
            raise NotFound(info["reason"])
        if digit and not info["digit"]:
            raise DataError("only a model of 28x28 one-channel images takes pictures prepared like MNIST digits")
        size = (info["height"], info["width"])
        return prepare_digit(image, name="the picture") if digit else fit_picture(image, size, info["channels"])

    def probe(self, picture: np.ndarray, method: str | None, expected: int | None) -> dict:
        """The model on one prepared picture: {picture (data URI), probs, pred, method, maps: [{target, image}]
        (toward the prediction, then `expected`; one colour scale), layers (as activations)}."""
        from deepdive.analysis import display_images, render
        from deepdive.analysis.probe import perturbed, probe

        if method is not None:
            self.check_method(method)
        if expected is not None:
            self.check_class(expected)
        model = self._model()
        shown = pictures_as_inputs(picture[None])
        x = self._shown_inputs(shown)
        with _MODEL_LOCK:
            result = probe(model, x[0], self.num_classes, method, [] if expected is None else [expected])
            variants = perturbed(model, shown[0], self.num_classes, self._shown_inputs)
        scale = render.shared_scale(*result.maps.values()) if result.maps else None
        return {"picture": bundle_mod.data_uri(bundle_mod.png_bytes(picture)),
                "probs": [round(float(v), 6) for v in result.probs], "pred": int(result.probs.argmax()),
                "method": method,
                "maps": [{"target": c, "image": bundle_mod.data_uri(render.overlay_png(picture, m, size=SAL_SIZE,
                                                                                       scale=scale))}
                         for c, m in result.maps.items()],
                "layers": [layer_view(layer["name"], layer["type"], layer["shape"], layer["maps"], layer["stats"])
                           for layer in result.layers],
                "perturbed": [{"id": v["id"], "label": v["label"], "probs": [round(float(p), 6) for p in v["probs"]],
                               "image": bundle_mod.data_uri(
                                   bundle_mod.png_bytes(display_images(v["picture"][None])[0]))}
                              for v in variants],
                "channels": self._probe_channels(x, picture, result.probs, expected)}

    def _probe_channels(self, x, picture, probs, expected):
        """The channels behind a picture's answer (x: its model input (1, C, H, W)), weighed against the class it
        should be (when that is not the answer) or the runner-up; None where the analysis has no channels."""
        if not self.res.has("channels"):
            return None
        pred = int(np.argmax(probs))
        other = expected if expected is not None and expected != pred else int(np.argsort(probs)[-2])
        return {"other": other, **self._weigh_channels(x, picture, pred, other)}

    def probe_neighbours(self, picture: np.ndarray) -> dict:
        """{reference, items: [{idx, label, similarity, image}]}: the picture's nearest training images. The first
        call per run computes every training image's features (deepdive.analysis.probe.TrainingFeatures)."""
        from deepdive.analysis.neighbours import reference_set
        from deepdive.analysis.probe import TrainingFeatures

        model = self._model()

        def load():
            reference = reference_set(self.record)
            if reference is None:
                raise NotFound(f"run {self.record.id} has no training images to search")
            with _MODEL_LOCK:
                return TrainingFeatures(model, reference)

        key = (str(self.record.run_dir), (self.record.run_dir / "model_best.pt").stat().st_mtime_ns)
        features = _FEATURES.get(key, load)
        with _MODEL_LOCK:
            idx, labels, sims = features.nearest(model, self._shown_inputs(pictures_as_inputs(picture[None]))[0])
        return {"reference": features.reference.name,
                "items": neighbour_items(training_images(self.record), idx, labels, sims)}

    def probe_influence(self, picture: np.ndarray, expected: int | None) -> dict:
        """{label, pred, for: [{idx, label, score, image}], against: [...]}: the training images whose training
        pulled the picture most toward `label` (the class it should be, else the model's answer) and pushed it
        most away from it (TracIn as deepdive.analysis.influence: the last layer, the final model). One pass over
        the training images per call (~3-4 s for MNIST's 55,000 on two cores)."""
        import torch

        from deepdive.analysis.activations import _device, evaluating
        from deepdive.analysis.influence import K, influence_scores, strongest
        from deepdive.analysis.neighbours import reference_set

        if not (self.res.summary.get("influence") or {}).get("available"):
            raise self._unavailable("influence", "did not weigh the training images")
        if expected is not None:
            self.check_class(expected)
        reference = reference_set(self.record)
        if reference is None:
            raise NotFound(f"run {self.record.id} has no training images to weigh")
        model = self._model()
        x = self._shown_inputs(pictures_as_inputs(picture[None]))
        recipe = self.record.config.get("resolved") or {}
        with _MODEL_LOCK:
            with torch.no_grad(), evaluating(model):
                pred = int(model(torch.as_tensor(x).float().to(_device(model))).argmax(1)[0])
            label = pred if expected is None else int(expected)
            trained = reference.labels[reference.idx]
            scores = influence_scores(model, x, [label], reference.model_inputs(), trained,
                                      recipe.get("label_smoothing", 0.0))
        against_pos, against_score, for_pos, for_score = (a[0] for a in strongest(scores, min(K, len(reference.idx))))
        images = training_images(self.record)

        def side(pos, values):
            return neighbour_items(images, reference.idx[pos], trained[pos], values, "score")
        return {"label": label, "pred": pred, "for": side(for_pos, for_score),
                "against": side(against_pos, against_score)}

    def probe_robustness(self, picture: np.ndarray, expected: int | None) -> dict:
        """{label, pred, mending, families: [{id, label, unit, holds, size, variant, into, image}]}: the smallest
        turn, shift, zoom, slant, thickness and invisible change (deepdive.analysis.robustness.search) that flips
        the model's answer on the picture, or, when `expected` differs from that answer, makes it `expected`
        (holds: what size None means, e.g. "holds to 45°")."""
        import torch

        from deepdive.analysis import display_images
        from deepdive.analysis.activations import _device, evaluating
        from deepdive.analysis.robustness import FAMILIES, search

        if expected is not None:
            self.check_class(expected)
        model = self._model()
        x = self._shown_inputs(pictures_as_inputs(picture[None]))
        with _MODEL_LOCK:
            with torch.no_grad(), evaluating(model):
                pred = int(model(torch.as_tensor(x).float().to(_device(model))).argmax(1)[0])
            mending = expected is not None and expected != pred
            label = int(expected) if mending else pred
            found = search(model, x, np.array([label]), np.array([mending]), *self._scale)
        shown = display_images(found["pictures"][0], scale=self._scale)
        return {"label": label, "pred": pred, "mending": bool(mending), "families": [
            {"id": f.id, "label": f.label, "unit": f.unit, "holds": f.holds_text,
             "size": _size_or_none(found[f.id][0][0]),
             "variant": str(found[f.id][1][0]), "into": int(found[f.id][2][0]),
             "image": bundle_mod.data_uri(bundle_mod.png_bytes(shown[k]))} for k, f in enumerate(FAMILIES)]}

    # ---- model inputs ---------------------------------------------------------------------------------------
    def _model(self):
        model = run_model(self.record.run_dir)
        if model is None:
            raise NotFound(f"the model of run {self.record.id} cannot be loaded, so only the precomputed maps "
                           "are available")
        return model

    def inputs(self, rows) -> np.ndarray:
        """float32 (len(rows), C, H, W) in the scale the model expects (AnalysisResult.inputs)."""
        return self.res.inputs(rows)


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
