"""Read a stored analysis: the only way the web (and the export) reads `runs/<id>/analysis/<split>/`.

    res = AnalysisResult.load(run_dir, "test")
    res.summary                 # dict (summary.json)
    res.examples                # DataFrame, one row per example (row i <-> images[i])
    res.images                  # uint8 (N, H, W) or (N, H, W, C), memory-mapped
    res.saliency("gradcam")     # {errors, errors_index, class_mean, class_rep, class_rep_index}
    res.activations()           # {layers, arrays, stats, focus_indices}
    res.neighbours()            # {index, similarity, label}: each row's nearest training images
    res.channels()              # {top_rows, class_share, errors_index, errors}: the head's input channels
    res.influence()             # {rows, against_/for_ index, label, score}: the training images behind each error
    res.dynamics()              # DataFrame, one row per training image: its training dynamics
    res.slices()                # DataFrame, every slice tried (deepdive.analysis.slices), lowest p first
    res.robustness()            # DataFrame: the smallest turn, shift, zoom, slant, thickness, adversarial
                                # change that flips each picture tried (deepdive.analysis.robustness);
                                # res.robustness_pictures() as changed
    res.label_issues, res.advice, res.verification, res.focus_indices
    res.has("saliency:gradcam") # ask before reading an optional piece

Missing pieces raise RunError saying what is missing and how to produce it. Arrays are loaded lazily and
cached, so a dashboard request for one table does not read every file.
"""
import json
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from deepdive.analysis import tables
from deepdive.errors import RunError

SPLITS = ("test", "val", "train")
SALIENCY_PARTS = ("errors", "class_mean", "class_rep")
NEIGHBOUR_FILES = ("index", "similarity", "label")   # neighbours/<name>.npy (analysis.neighbours writes them)
CHANNEL_FILES = ("top_rows", "class_share", "errors_index", "errors")   # channels/<name>.npy (analysis.channels)
# influence/<name>.npy (analysis.influence writes them)
INFLUENCE_FILES = ("rows", "against_index", "against_label", "against_score", "for_index", "for_label", "for_score")


def pictures_as_inputs(pictures: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, 3), as the split's images are -> float32 (N, C, H, W) in [0, 1] (the inverse
    of deepdive.analysis.display_images for pictures in [0, 1])."""
    x = np.asarray(pictures, np.float32) / 255
    return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)


def rerun_command(run_id: str, split: str) -> str:
    """The command that (re)makes a run's analysis of `split`."""
    return (f"deepdive analyze {run_id} --label-issues train --folds K" if split == "train"
            else f"deepdive analyze {run_id} --split {split}")


def analysis_dir(run_dir, split) -> Path:
    return Path(run_dir) / "analysis" / split


class AnalysisResult:
    def __init__(self, run_dir: Path, split: str, folder: Path, summary: dict):
        self.run_dir, self.split, self.folder, self.summary = Path(run_dir), split, folder, summary
        self._saliency = {}     # method -> saliency(method)'s memory-mapped arrays

    @classmethod
    def load(cls, run_dir, split="test") -> "AnalysisResult":
        folder = analysis_dir(run_dir, split)
        path = folder / "summary.json"
        if not path.is_file():
            run_id = Path(run_dir).name
            raise RunError(f"run {run_id} has no analysis of its {split!r} split (no {path}); run: "
                           f"{rerun_command(run_id, split)}")
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise RunError(f"cannot read {path}: {e}; re-run the analysis") from None
        return cls(run_dir, split, folder, summary)

    @staticmethod
    def splits(run_dir) -> list[str]:
        """The splits of a run that have a stored analysis."""
        return [s for s in SPLITS if (analysis_dir(run_dir, s) / "summary.json").is_file()]

    # ---- basic facts --------------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.summary["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.summary["class_names"])

    @property
    def focus_indices(self) -> np.ndarray:
        """Rows of the focus set (errors, class representatives, top label issues) with precomputed activations."""
        return np.asarray(self.summary.get("focus", {}).get("indices", []), dtype=np.int64)

    # ---- tables -------------------------------------------------------------------------------------------
    @cached_property
    def examples(self) -> pd.DataFrame:
        return self._parquet("examples.parquet", "the per-example table")

    @cached_property
    def label_issues(self) -> pd.DataFrame:
        return self._parquet("label_issues.parquet", "the label-issue table")

    def dynamics(self) -> pd.DataFrame:
        """One row per training image of the run: its training dynamics (deepdive.analysis.dynamics.image_table)."""
        if not self.has("dynamics"):
            raise RunError(f"no training dynamics in the {self.split!r} analysis: "
                           f"{(self.summary.get('dynamics') or {}).get('reason') or 'it predates them; re-run it'}")
        return self._parquet("dynamics.parquet", "the training dynamics")

    def slices(self) -> pd.DataFrame:
        """Every slice the analysis tried (deepdive.analysis.slices.SLICE_COLUMNS), lowest p first."""
        if not self.has("slices"):
            raise RunError(f"no slices in the {self.split!r} analysis: it predates them; re-run it "
                           f"({rerun_command(self.run_dir.name, self.split)})")
        return self._parquet("slices.parquet", "the slices")

    def robustness(self) -> pd.DataFrame:
        """What fools the model (deepdive.analysis.robustness.TABLE_COLUMNS): per picture tried and family, the
        smallest change that flips a right answer (mending False) or makes an error right (mending True)."""
        if not self.has("robustness"):
            raise RunError(f"nothing on what fools the model in the {self.split!r} analysis: "
                           f"{(self.summary.get('robustness') or {}).get('reason') or 'it predates it'}; re-run it "
                           f"({rerun_command(self.run_dir.name, self.split)})")
        return self._parquet("robustness.parquet", "what fools the model")

    def robustness_pictures(self) -> np.ndarray:
        """uint8 (rows of robustness(), families, H, W[, 3]): each picture as changed at its size; memory-mapped."""
        self.robustness()
        return self._npy("robustness_images.npy", "the pictures that fool the model")

    def errors(self) -> pd.DataFrame:
        """Misclassified examples, most confident first (with their taxonomy category)."""
        return tables.by_confidence(self.examples[~self.examples["correct"]])

    def group(self, true: int, pred: int) -> pd.DataFrame:
        """Examples of class `true` predicted as `pred`, most confident first."""
        return tables.group_rows(self.examples, true, pred)

    def class_errors(self, cls: int) -> pd.DataFrame:
        return tables.class_errors(self.examples, cls)

    @cached_property
    def images(self) -> np.ndarray:
        return self._npy("images.npy", "the evaluated images")

    # ---- model-stage outputs ------------------------------------------------------------------------------
    @property
    def saliency_methods(self) -> list[str]:
        return [m for m in self.summary.get("saliency", {}).get("methods", []) if self.has(f"saliency:{m}")]

    def saliency(self, method: str) -> dict:
        """{errors (n_err, 2, H, W) [pred map, true map], errors_index (n_err,) rows, class_mean (C, H, W),
        class_rep (C, H, W), class_rep_index}; arrays memory-mapped, opened once per method."""
        if method in self._saliency:
            return self._saliency[method]
        if not self.has(f"saliency:{method}"):
            known = ", ".join(self.saliency_methods) or "none"
            raise RunError(f"no {method!r} saliency stored for split {self.split!r} (available: {known})")
        out = {part: self._npy(f"saliency/{method}_{part}.npy", f"{method} saliency") for part in SALIENCY_PARTS}
        # Costly methods store maps for only the first (most confident) errors: index rows to match.
        out["errors_index"] = self._npy("saliency/errors_index.npy", "saliency error rows")[:len(out["errors"])]
        out["class_rep_index"] = self._npy("saliency/class_rep_index.npy", "saliency class representatives")
        self._saliency[method] = out
        return out

    def stored_saliency(self, method: str, row: int, target: int) -> np.ndarray | None:
        """The map of `method` toward class `target` for image `row` where the analysis kept it (an error's toward
        its prediction and its label, a class representative's toward its class), float32 (H, W); else None."""
        sal = self.saliency(method)
        hits = np.flatnonzero(np.asarray(sal["errors_index"]) == row)
        if len(hits):
            pred, true = int(self.examples["pred"].iat[row]), int(self.examples["true"].iat[row])
            if target in (pred, true):
                return np.asarray(sal["errors"][int(hits[0]), 0 if target == pred else 1], dtype=np.float32)
        rep = np.asarray(sal["class_rep_index"])
        if 0 <= target < len(rep) and rep[target] == row:
            return np.asarray(sal["class_rep"][target], dtype=np.float32)
        return None

    def inputs(self, rows) -> np.ndarray:
        """float32 (len(rows), C, H, W) in the scale the model expects: the run's stored evaluation inputs when it
        was logged by log_evaluation, else the images / 255."""
        from deepdive.analysis import stored_inputs

        stored = stored_inputs.load(self.run_dir / "eval", self.split)
        if stored is not None:
            return stored[rows]
        return pictures_as_inputs(self.images[rows])

    def saliency_random(self, method: str) -> np.ndarray | None:
        """The class representatives' maps of `method` with the model's weights shuffled (the sanity check),
        (C, H, W); None where the analysis did not draw them (a skipped method, an analysis before 2026-12-06)."""
        if not self.has(f"saliency_random:{method}"):
            return None
        return self._npy(f"saliency/{method}_class_random.npy", f"{method} saliency sanity check")

    def activations(self) -> dict:
        """{layers [{name, type, shape}], arrays {layer name: (n_focus, ...) float16}, stats, focus_indices}."""
        if not self.has("activations"):
            raise RunError(f"no activations stored for split {self.split!r} (the model could not be loaded "
                           "when the run was analysed, or the analysis predates them)")
        folder = self.folder / "activations"
        layers = self._json("activations/layers.json", "activation layer list")
        arrays = {}
        for i, layer in enumerate(layers):
            path = folder / layer.get("file", f"{i}_{layer['name']}.npy")
            if not path.is_file():
                raise RunError(f"activation file missing: {path}; re-run the analysis")
            arrays[layer["name"]] = np.load(path, mmap_mode="r")
        has_stats = (folder / "stats.json").is_file()
        stats = self._json("activations/stats.json", "activation statistics") if has_stats else {}
        return {"layers": layers, "arrays": arrays, "stats": stats, "focus_indices": self.focus_indices}

    def neighbours(self) -> dict:
        """{index (N, K) training-set indices, similarity (N, K), label (N, K)} for every row; memory-mapped."""
        if not self.has("neighbours"):
            raise RunError(f"no nearest training images stored for split {self.split!r} (the run has no training "
                           "images of its own, its model could not be loaded, or the analysis predates them)")
        return {name: self._npy(f"neighbours/{name}.npy", "the nearest training images")
                for name in NEIGHBOUR_FILES}

    def influence(self) -> dict:
        """{rows (E,), against_index / for_index (E, K) training-set indices, against_label / for_label (E, K) their
        labels as trained, against_score / for_score (E, K)}: the training images most against and most for each
        error's label (deepdive.analysis.influence); memory-mapped."""
        if not self.has("influence"):
            raise RunError(f"no training images behind the errors stored for split {self.split!r}: "
                           f"{(self.summary.get('influence') or {}).get('reason') or 'the analysis predates them'}")
        return {name: self._npy(f"influence/{name}.npy", "the training images behind the errors")
                for name in INFLUENCE_FILES}

    def channels(self) -> dict:
        """{top_rows (K, TOP), class_share (K, C), errors_index (n,), errors (n, K)}: the channels of the last
        feature map before the final Linear (deepdive.analysis.channels); memory-mapped."""
        if not self.has("channels"):
            raise RunError(f"no channels stored for split {self.split!r} (the model could not be loaded, it is an "
                           "ensemble or no feature map reaches its classifier, or the analysis predates them)")
        return {name: self._npy(f"channels/{name}.npy", "the channels") for name in CHANNEL_FILES}

    @cached_property
    def advice(self) -> dict:
        return self._json("advice.json", "the advice")

    @property
    def advice_pictures(self) -> np.ndarray | None:
        """The perturbed pictures the suggestions' examples index (uint8 (M, H, W[, 3])), or None (no examples, or
        an analysis from before 2026-12-06)."""
        return self._npy("advice_images.npy", "the advice's pictures") if self.has("advice_images") else None

    @property
    def verification(self) -> dict | None:
        """The verify-advice result, or None when the advice has not been verified."""
        if not (self.folder / "verify_advice.json").is_file():
            return None
        return self._json("verify_advice.json", "the advice verification")

    # ---- presence -----------------------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        """Whether an optional piece is stored: examples, images, label_issues, advice, verification,
        activations, embedding, neighbours, influence, saliency (any method), saliency:<method> or
        saliency_random:<method>."""
        f = self.folder
        if name.startswith("saliency:"):
            method = name.split(":", 1)[1]
            return all((f / "saliency" / f"{method}_{p}.npy").is_file() for p in SALIENCY_PARTS) and \
                (f / "saliency" / "errors_index.npy").is_file()
        if name.startswith("saliency_random:"):   # the sanity check's maps of one method
            return (f / "saliency" / f"{name.split(':', 1)[1]}_class_random.npy").is_file()
        if name == "saliency":
            return any(self.has(f"saliency:{m}") for m in self.summary.get("saliency", {}).get("methods", []))
        if name == "neighbours":
            return all((f / "neighbours" / f"{part}.npy").is_file() for part in NEIGHBOUR_FILES)
        if name == "channels":
            return all((f / "channels" / f"{part}.npy").is_file() for part in CHANNEL_FILES)
        if name == "influence":
            return all((f / "influence" / f"{part}.npy").is_file() for part in INFLUENCE_FILES)
        if name == "embedding":
            return bool(self.summary.get("embedding", {}).get("available")) and (f / "examples.parquet").is_file()
        files = {"examples": "examples.parquet", "images": "images.npy", "label_issues": "label_issues.parquet",
                 "advice": "advice.json", "advice_images": "advice_images.npy", "verification": "verify_advice.json",
                 "activations": "activations/layers.json", "summary": "summary.json", "dynamics": "dynamics.parquet",
                 "slices": "slices.parquet", "robustness": "robustness.parquet"}
        if name not in files:
            raise ValueError(f"unknown analysis piece {name!r}; known: "
                             f"{', '.join([*files, 'channels', 'embedding', 'influence', 'neighbours', 'saliency'])}")
        return (f / files[name]).is_file()

    # ---- readers ------------------------------------------------------------------------------------------
    def _missing(self, rel: str, what: str):
        return RunError(f"{what} is missing from the {self.split!r} analysis of run {self.run_dir.name} "
                        f"({self.folder / rel}); re-run: {rerun_command(self.run_dir.name, self.split)}")

    def _parquet(self, rel: str, what: str) -> pd.DataFrame:
        path = self.folder / rel
        if not path.is_file():
            raise self._missing(rel, what)
        return pd.read_parquet(path)

    def _npy(self, rel: str, what: str) -> np.ndarray:
        path = self.folder / rel
        if not path.is_file():
            raise self._missing(rel, what)
        return np.load(path, mmap_mode="r")

    def _json(self, rel: str, what: str):
        path = self.folder / rel
        if not path.is_file():
            raise self._missing(rel, what)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise RunError(f"{path} is not valid JSON ({e}); re-run the analysis") from None
