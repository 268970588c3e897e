"""Read a run's deep dive from Python, in a notebook or a script: the tables `deepdive export` writes, as
DataFrames, and the rest of the stored analysis.

    dive = deepdive.open_run("latest", workspace="runs")          # split="test" unless told
    dive                                   # a notebook shows accuracy, errors, top confusions, label issues...
    dive.table("errors")                   # any table of `deepdive export` (TABLES), people's verdicts included
    dive.tag(rows, "check later")          # tag images for the dashboard (its predictions filter by tag)
    dive.epochs                            # the training curves and every metric logged, one row per epoch
    dive.steps                             # what was logged per training step, one row per step
    dive.pictures(dive.table("errors")["row"][:16])    # those rows' images as one captioned PIL image
    dive.model()                           # the run's model, on the CPU, in eval mode
    dive.explain(row)                      # the image and its saliency maps toward the answer and the label
    dive.saliency(row, "gradcam", target)  # one signed map (H, W): stored where the analysis kept it, else Captum
    dive.result                            # all the rest: saliency, activations, neighbours (AnalysisResult)
"""
import html

import numpy as np
import pandas as pd

from deepdive.analysis import export
from deepdive.analysis.results import AnalysisResult
from deepdive.errors import DeepdiveError, RunError
from deepdive.paths import DEFAULT_WORKSPACE

TABLES = export.TABLES


def open_run(run="latest", workspace=DEFAULT_WORKSPACE, split="test") -> "RunAnalysis":
    """The stored analysis of `run` (id, unique id prefix, name or 'latest') on `split`; RunError saying how to
    make it when there is none."""
    from deepdive.store import Store

    with Store.open(workspace, create=False) as store:
        record = store.get_run(run)
    return RunAnalysis(record, AnalysisResult.load(record.run_dir, split), workspace)


class RunAnalysis:
    """One run's analysis of one split (open_run)."""

    def __init__(self, record, result: AnalysisResult, workspace):
        self.record, self.result, self.workspace = record, result, workspace
        self.id, self.name, self.split = record.id, record.name, result.split
        self._model = None

    def __repr__(self):
        s = self.summary
        return (f"<deepdive analysis of run {self.id} ({self.name}), {self.split} split: {s['accuracy']:.2%}, "
                f"{s['error_count']} errors of {s['n']}>")

    @property
    def summary(self) -> dict:
        """The analysis summary (summary.json): every stage's findings."""
        return self.result.summary

    @property
    def class_names(self) -> list[str]:
        return self.result.class_names

    @property
    def images(self) -> np.ndarray:
        """The split's images as shown, uint8 (N, H, W) or (N, H, W, C); image i is the tables' row i."""
        return self.result.images

    def table(self, name: str) -> pd.DataFrame:
        """Table `name` (one of TABLES, or "epochs"), as `deepdive export` writes it (export.table refuses other
        names)."""
        from deepdive.store import Store

        if name in export.RUN_TABLES:
            return self._run_table(name)
        with Store.open(self.workspace, create=False) as store:
            reviews = export.store_part(store, self.record, self.result, name)
        return export.table(self.result, name, reviews)

    def tag(self, rows, tag: str, remove=False) -> int:
        """Put `tag` on the images in `rows` (or take it off, remove=True), as the dashboard does: the predictions
        table then filters by it (`/predictions/tag=...`). Returns how many images changed."""
        from deepdive.analysis.tags import tag_rows
        from deepdive.store import Store

        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64)).tolist()
        with Store.open(self.workspace, create=False) as store:
            return tag_rows(store, self.record, self.split, self.result.examples, rows, tag, remove)

    @property
    def epochs(self) -> pd.DataFrame:
        """The run's logged epochs (`deepdive export RUN epochs`): epoch, train_loss, train_acc, val_loss, val_acc,
        lr, seconds, member, then a column per other metric logged (system/cpu_percent, your own...)."""
        return self._run_table("epochs")

    @property
    def steps(self) -> pd.DataFrame:
        """What the run logged per training step (`deepdive export RUN steps`): step, then a column per name
        (the recipe's train_loss, train_acc, lr, epoch and train_seconds every 10 steps; run.log_step's)."""
        return self._run_table("steps")

    def _run_table(self, name) -> pd.DataFrame:
        from deepdive.store import Store

        with Store.open(self.workspace, create=False) as store:
            return export.run_table(store, self.id, name)

    def model(self):
        """The run's model (model_best.pt) on the CPU, in eval mode; loaded once."""
        from deepdive.models import load_checkpoint

        if self._model is None:
            path = self.record.run_dir / "model_best.pt"
            if not path.is_file():
                raise RunError(f"run {self.id} has no model checkpoint ({path} is missing)")
            self._model = load_checkpoint(path, device="cpu").eval()
        return self._model

    def saliency(self, row: int, method="gradient", target=None) -> np.ndarray:
        """The signed map (H, W) of `method` (deepdive.analysis.saliency.METHODS) toward class `target` (default:
        the model's answer) for image `row`: the analysis' own where it kept it, else computed with the model."""
        from deepdive.analysis.saliency import METHODS, attribute

        if method not in METHODS:
            raise DeepdiveError(f"unknown saliency method {method!r}; methods: {', '.join(METHODS)}")
        row = self._row(row)
        target = int(self.result.examples["pred"].iat[row]) if target is None else int(target)
        if not 0 <= target < len(self.class_names):
            raise DeepdiveError(f"target must be a class in 0..{len(self.class_names) - 1}, got {target}")
        if method in self.result.saliency_methods:
            stored = self.result.stored_saliency(method, row, target)
            if stored is not None:
                return stored
        return attribute(self.model(), self.result.inputs([row]), [target], method)[0]

    def explain(self, row: int, methods=("gradient", "gradcam"), size=112):
        """A PIL image: image `row` with its answer, then per method its map toward the answer and, for an error,
        toward the label, both on one colour scale (red: for the class, blue: against)."""
        from io import BytesIO

        from PIL import Image, ImageDraw, ImageFont

        from deepdive.analysis import render

        row = self._row(row)
        ex, names = self.result.examples, self.class_names
        true, pred, conf = int(ex["true"].iat[row]), int(ex["pred"].iat[row]), float(ex["confidence"].iat[row])
        image = np.asarray(self.images[row])
        tiles = [(Image.open(BytesIO(render.to_png(image, size))).convert("RGB"),
                  [f"#{int(ex['idx'].iat[row])} label {names[true]}", (f"answer {names[pred]}", f" {conf:.0%}")])]
        for method in methods:
            targets = [pred] if pred == true else [pred, true]
            maps = [self.saliency(row, method, t) for t in targets]
            scale = render.shared_scale(*maps)
            for t, attr in zip(targets, maps):
                png = render.overlay_png(image, attr, size=size, scale=scale)
                tiles.append((Image.open(BytesIO(png)).convert("RGB"), [method, f"toward {names[t]}"]))
        w = max(t.width for t, _ in tiles)
        h = max(t.height for t, _ in tiles)
        sheet = Image.new("RGB", (len(tiles) * (w + 6), h + 34), "white")
        draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=11)
        for k, (tile, caption) in enumerate(tiles):
            sheet.paste(tile, (k * (w + 6) + 3, 3))
            caption = [_fit_text(draw, line, font, w) if isinstance(line, str) else      # (text, kept whole)
                       _fit_text(draw, line[0], font, w - draw.textlength(line[1], font=font)) + line[1]
                       for line in caption]
            draw.multiline_text((k * (w + 6) + 3, h + 6), "\n".join(caption), font=font, spacing=1,
                                fill=(185, 28, 28) if k == 0 and pred != true else (55, 65, 81))
        return sheet

    def _row(self, row) -> int:
        n = len(self.result.examples)
        if not 0 <= int(row) < n:
            raise DeepdiveError(f"row must be in 0..{n - 1}, got {row}")
        return int(row)

    def pictures(self, rows, columns=8, scale=3):
        """A PIL image of the given rows' images in a grid, `scale` times their size, each captioned with its
        label and the model's confidence, and if wrong what it was taken for, in red ("7", "as 2 99%")."""
        from PIL import Image, ImageDraw, ImageFont

        rows = [int(r) for r in np.asarray(rows).reshape(-1)]
        n = len(self.result.examples)
        if not rows or any(not 0 <= r < n for r in rows):
            raise DeepdiveError(f"pictures needs rows in 0..{n - 1}, got {rows[:5]}{'...' if len(rows) > 5 else ''}")
        ex = self.result.examples
        names = self.class_names
        h, w = self.images.shape[1:3]
        tile_w, tile_h, caption = w * scale, h * scale, 28
        cols = min(columns, len(rows))
        grid = Image.new("RGB", (cols * (tile_w + 4), -(-len(rows) // cols) * (tile_h + caption + 4)), "white")
        draw = ImageDraw.Draw(grid)
        font = ImageFont.load_default(size=11)     # Pillow's own face (its bitmap one where there is no FreeType)
        for k, r in enumerate(rows):
            x, y = (k % cols) * (tile_w + 4), (k // cols) * (tile_h + caption + 4)
            picture = Image.fromarray(np.asarray(self.images[r])).convert("RGB")
            grid.paste(picture.resize((tile_w, tile_h), Image.NEAREST), (x + 2, y + 2))
            true, pred, conf = int(ex["true"].iat[r]), int(ex["pred"].iat[r]), float(ex["confidence"].iat[r])
            percent = f" {conf:.0%}"
            text = [_fit_text(draw, names[true], font, tile_w),
                    percent.strip() if true == pred else
                    _fit_text(draw, f"as {names[pred]}", font, tile_w - draw.textlength(percent, font=font)) + percent]
            draw.multiline_text((x + 2, y + tile_h + 3), "\n".join(text), font=font, spacing=1,
                                fill=(22, 101, 52) if true == pred else (185, 28, 28))
        return grid

    def _repr_html_(self) -> str:
        """A notebook's view of it: the headline numbers and how to read further."""
        s, e = self.summary, html.escape
        confusions = ", ".join(f"{e(c['true_name'])}→{e(c['pred_name'])} ×{c['count']}"
                               for c in (s.get("top_confusions") or [])[:5]) or "none"
        lines = [("accuracy", f"{s['accuracy']:.2%} ({s['error_count']:,} errors of {s['n']:,})"),
                 ("top confusions", confusions)]
        taxonomy = (s.get("taxonomy") or {}).get("total")
        if taxonomy:
            lines.append(("errors by kind", ", ".join(f"{e(k)} {v}" for k, v in taxonomy.items())))
        issues = s.get("label_issues") or {}
        if "count" in issues:
            lines.append(("likely label errors", f"{issues['count']} (table('label-issues'))"))
        cut = s.get("slices") or {}
        if cut.get("available") and cut.get("listed"):
            top = cut["listed"][0]
            lines.append(("where errors gather", f"{cut['found']} of {cut['tested']:,} slices found; strongest: "
                                                 f"{e(top['description'])}, {top['errors']} of {top['images']:,} "
                                                 f"wrong, q {top['q']:.2g} (table('slices'))"))
        inf = s.get("influence") or {}
        if inf.get("available") and inf.get("behind"):
            names = self.class_names
            behind = ", ".join(f"#{i} ({e(names[label])}) ×{n}" for i, label, n, *_ in inf["behind"][:4])
            lines.append(("training images behind the most errors", f"{behind} (table('influence'))"))
        rob = s.get("robustness") or {}
        adv = next((f for f in rob.get("families", []) if f["id"] == "adversarial"), None)
        if rob.get("available") and adv and adv["median"] is not None:
            mend = adv["errors"]
            lines.append(("what fools it", f"half of {rob['n']} right answers flip by ε∞ {adv['median']:.3g}" +
                          (f", the errors are made right by {mend['median']:.3g}" if mend["median"] is not None
                           else "") + " (table('robustness'))"))
        dyn = s.get("dynamics") or {}
        if dyn.get("available"):
            lines.append(("training labels in doubt", f"{dyn['negative_aum']:,} of {dyn['images']:,} training "
                                                      "images (table('dynamics'))"))
        body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td>{v}</td></tr>"
                       for k, v in lines)
        return (f"<div><b>{e(self.name)}</b> <code>{e(self.id)}</code> · {e(self.record.dataset)} · "
                f"{e(self.split)} split<table>{body}</table><small>tables: {', '.join(TABLES)} "
                "(dive.table(name)); dive.pictures(rows); dive.explain(row); dive.model()</small></div>")


def _fit_text(draw, text: str, font, width: float) -> str:
    """`text` as it fits `width` pixels in `font`: whole, or cut short with an ellipsis."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "…"
