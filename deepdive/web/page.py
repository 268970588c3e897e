"""The one HTML page both modes share: the template plus styles, scripts and JSON data blocks.

Served mode links /static/... files; report mode inlines every script and stylesheet so the file opens from disk
with no network request. Data reaches the page only through <script type="application/json"> blocks whose text
is escaped by `json_for_script`, so no run name or class name can close the block or open a comment.
"""
import base64
import hashlib
import html
import json
import math
import re
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATE = HERE / "templates" / "index.html"

# Load order: core first (namespace, helpers), then the shared widgets, the views, and the boot code last.
SCRIPTS = ("core.js", "widgets.js", "detail.js", "view-runs.js", "view-overview.js", "view-classes.js",
           "view-confusion.js", "view-slices.js", "view-robustness.js", "view-saliency.js", "view-activations.js",
           "view-predictions.js", "view-issues.js", "view-confidence.js", "view-dynamics.js", "view-embedding.js", "view-advice.js",
           "view-compare.js", "view-try.js", "app.js")
STYLES = ("style.css",)
PLOTLY = "plotly.min.js"

# Characters that must not appear raw inside a <script> element's text (or that break JS string literals).
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def plotly_js_path() -> Path:
    """plotly.js as shipped inside the plotly Python package (served and inlined locally, never from a CDN)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / PLOTLY


def jsonable(obj):
    """numpy scalars/arrays to Python, NaN/inf to None (JSON has no NaN), Paths to str; recursively."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def json_for_script(obj) -> str:
    """JSON text safe inside <script type="application/json">: `<`, `>` and `&` become \\u escapes, so `</script>`
    and `<!--` cannot occur; JSON.parse reads the escapes back as the original characters."""
    text = json.dumps(jsonable(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_ESCAPES[m.group()], text)


def _inline_script_text(text: str) -> str:
    """JS source made safe to inline: `</script` can only occur in strings/regexes/comments, where `<\\/` reads the same."""
    if "<!--" in text:
        raise ValueError("inlined script contains '<!--', which would change how the HTML parser reads it")
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE)


def _script_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def render(mode: str, title: str, data_blocks: dict, *, inline: bool) -> str:
    """The page. data_blocks: {element id: JSON-able object}; inline=True embeds scripts, styles and plotly.js.

    An inlined page carries a Content-Security-Policy that allows exactly its own scripts (by hash) and data:
    images, and no network access at all (the served app sends its policy as a header instead)."""
    csp = ""
    if inline:
        styles = "\n".join(f"<style>\n{(STATIC_DIR / s).read_text()}\n</style>" for s in STYLES)
        sources = [plotly_js_path().read_text(encoding="utf-8")] + [(STATIC_DIR / s).read_text() for s in SCRIPTS]
        bodies = [f"\n{_inline_script_text(src)}\n" for src in sources]
        scripts = "\n".join(f"<script>{body}</script>" for body in bodies)
        # 'unsafe-eval': plotly's WebGL scatter (regl) compiles its draw calls with new Function.
        policy = (f"default-src 'none'; script-src {' '.join(map(_script_hash, bodies))} 'unsafe-eval'; "
                  "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; connect-src 'none'; "
                  "base-uri 'none'; form-action 'none'")
        csp = f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
    else:
        styles = "\n".join(f'<link rel="stylesheet" href="/static/{s}">' for s in STYLES)
        # plotly.js (4.8 MB) is not among them: the page loads it after its first paint (DD.plotly()).
        scripts = "\n".join(f'<script src="/static/{s}" defer></script>' for s in SCRIPTS)
    blocks = "\n".join(f'<script type="application/json" id="{html.escape(key)}">{json_for_script(value)}</script>'
                       for key, value in data_blocks.items())
    page = TEMPLATE.read_text()
    for marker, text in (("CSP", csp), ("TITLE", html.escape(title)), ("MODE", html.escape(mode)), ("STYLES", styles),
                         ("DATA", blocks), ("SCRIPTS", scripts)):
        page = page.replace(f"<!--dd:{marker}-->", text)
    return page
