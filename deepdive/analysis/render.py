"""Pictures of attributions and feature maps, as arrays or PNG bytes (numpy + Pillow only; the web reuses these).

Signed attributions use a diverging scheme centred at zero: red = the pixel pushes toward the class, blue = it
pushes away, no colour (transparent over the image, white on its own) = no influence. The scale is symmetric,
±`scale`, by default a high percentile of |attr|; pass one `shared_scale(...)` to draw maps comparably (the
predicted- and the true-class map of an error). Images are upscaled with nearest neighbour so pixels stay crisp.

    diverging_rgba(attr, scale) -> uint8 (H,W,4)        overlay_png(image, attr, size, scale) -> PNG bytes
    colorbar_png(scale) -> PNG bytes                     grid_png(maps (K,h,w) or (F,)) -> PNG bytes
"""
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

POSITIVE = np.array([214, 39, 40], np.float32)  # red: pushes toward the class
NEGATIVE = np.array([33, 102, 172], np.float32)  # blue: pushes away from it
PERCENTILE = 99.0

# matplotlib's viridis sampled at 0, 1/8, ..., 1; linear interpolation in between is visually indistinguishable.
_VIRIDIS = np.array([(68, 1, 84), (71, 45, 123), (59, 82, 139), (44, 114, 142), (33, 145, 140), (40, 174, 128),
                     (94, 201, 98), (173, 220, 48), (253, 231, 37)], np.float32)


def shared_scale(*maps, percentile: float = PERCENTILE) -> float:
    """One symmetric scale for several maps: the `percentile` of |attr| over all of them (never 0)."""
    values = np.abs(np.concatenate([np.asarray(m, np.float32).ravel() for m in maps])) if maps else np.zeros(0)
    values = values[np.isfinite(values)]
    if not values.size:
        return 1.0
    scale = float(np.percentile(values, percentile))
    if scale <= 0:
        scale = float(values.max())
    return scale if scale > 0 else 1.0


def diverging_rgba(attr, scale: float | None = None) -> np.ndarray:
    """uint8 (H, W, 4): red for attr > 0, blue for attr < 0, opacity |attr| / scale (clipped to 1); 0 is fully
    transparent. Non-finite values count as 0."""
    attr = np.nan_to_num(np.asarray(attr, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    scale = shared_scale(attr) if scale is None else float(scale)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    v = np.clip(attr / scale, -1.0, 1.0)
    rgba = np.empty((*attr.shape, 4), np.uint8)
    rgba[..., :3] = np.where((v >= 0)[..., None], POSITIVE, NEGATIVE).astype(np.uint8)
    rgba[..., 3] = np.round(np.abs(v) * 255).astype(np.uint8)
    return rgba


def overlay_rgb(image, attr, scale: float | None = None) -> np.ndarray:
    """uint8 (H, W, 3): the attribution composited over a light grayscale version of the image."""
    rgba = diverging_rgba(attr, scale).astype(np.float32)
    background = _light_gray(image)
    if background.shape != rgba.shape[:2]:
        raise ValueError(f"image {background.shape} and attribution {rgba.shape[:2]} differ in size")
    alpha = rgba[..., 3:] / 255.0
    out = background[..., None] * (1 - alpha) + rgba[..., :3] * alpha
    return np.round(out).astype(np.uint8)


def overlay_png(image, attr, size: int | None = 112, scale: float | None = None) -> bytes:
    """PNG of overlay_rgb, upscaled (nearest neighbour) so its longer side is about `size` pixels."""
    return to_png(overlay_rgb(image, attr, scale), size)


def colorbar_png(scale: float, width: int = 240, height: int = 46) -> bytes:
    """A legend for diverging_rgba at `scale`: blue (-scale) … white (0) … red (+scale), with the numbers."""
    scale = float(scale)
    bar_h = height // 2
    v = np.linspace(-1.0, 1.0, width, dtype=np.float32)
    color = np.where((v >= 0)[:, None], POSITIVE, NEGATIVE)
    alpha = np.abs(v)[:, None]
    row = np.round(255 * (1 - alpha) + color * alpha).astype(np.uint8)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(Image.fromarray(np.repeat(row[None], bar_h, axis=0)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, 0, width - 1, bar_h - 1], outline=(120, 120, 120))
    font = _font(max(9, height - bar_h - 8))
    labels = [(f"-{scale:.3g}", 0), ("0", 0.5), (f"+{scale:.3g}", 1)]
    for text, where in labels:
        w = draw.textlength(text, font=font)
        x = min(max(where * width - w / 2, 1), width - w - 1)
        draw.text((x, bar_h + 3), text, fill=(40, 40, 40), font=font)
    return _encode(canvas)


def sequential_rgb(values) -> np.ndarray:
    """uint8 (..., 3): a viridis-like colour for each value in [0, 1] (clipped; NaN -> the lowest colour)."""
    t = np.clip(np.nan_to_num(np.asarray(values, np.float32), nan=0.0), 0.0, 1.0)
    anchors = np.linspace(0.0, 1.0, len(_VIRIDIS))
    rgb = np.stack([np.interp(t, anchors, _VIRIDIS[:, k]) for k in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def grid_png(maps, cols: int | None = None, zoom: int | None = None, pad: int = 2) -> bytes:
    """PNG of feature maps (K, h, w) in a grid, each map normalised to its own min..max (a constant map is drawn
    at the lowest colour). A vector (F,) — a linear layer — is drawn as one near-square map of its units."""
    maps = np.asarray(maps, np.float32)
    if maps.ndim == 1:
        maps = _square(maps)[None]
    if maps.ndim != 3 or not maps.shape[0]:
        raise ValueError(f"grid_png needs maps of shape (K, h, w) or (F,), got {maps.shape}")
    k, h, w = maps.shape
    cols = cols or math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    zoom = zoom or max(1, 48 // max(h, w))
    lo = np.nanmin(maps, axis=(1, 2), keepdims=True)
    span = np.nanmax(maps, axis=(1, 2), keepdims=True) - lo
    normed = np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1), 0.0)
    cells = sequential_rgb(normed).repeat(zoom, axis=1).repeat(zoom, axis=2)  # (K, h*z, w*z, 3)
    ch, cw = h * zoom, w * zoom
    grid = np.full((rows * (ch + pad) + pad, cols * (cw + pad) + pad, 3), 255, np.uint8)
    for i in range(k):
        r, c = divmod(i, cols)
        y, x = pad + r * (ch + pad), pad + c * (cw + pad)
        grid[y:y + ch, x:x + cw] = cells[i]
    return to_png(grid)


def to_png(array, size: int | None = None) -> bytes:
    """PNG bytes of a uint8 (H, W), (H, W, 3) or (H, W, 4) array, upscaled by an integer factor (nearest
    neighbour) so its longer side is at least `size` when given."""
    img = Image.fromarray(np.ascontiguousarray(array))
    if size:
        factor = max(1, math.ceil(size / max(img.size)))
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    return _encode(img)


def _light_gray(image) -> np.ndarray:
    """float (H, W) background for overlays: the image's luminance compressed into 102..255 so colours stay
    readable, with a dark-background image (MNIST: white ink on black) inverted to dark ink on white."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        gray = img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    elif img.ndim == 3 and img.shape[-1] == 1:
        gray = img[..., 0].astype(np.float32)
    elif img.ndim == 2:
        gray = img.astype(np.float32)
    else:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {img.shape}")
    if img.dtype != np.uint8:  # float images in [0, 1]
        gray = np.clip(gray, 0, 1) * 255
    if gray.mean() < 128:
        gray = 255 - gray
    return 102 + 0.6 * gray


def _square(vector: np.ndarray) -> np.ndarray:
    side = math.ceil(math.sqrt(len(vector)))
    out = np.full(side * side, np.nan, np.float32)
    out[:len(vector)] = vector
    return out.reshape(side, side)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _encode(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
