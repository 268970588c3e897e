"""Augmentation on whole batches, on the device the batch lives on, plus deterministic perturbations.

Training:   augment_batch(x, cfg, generator) -> x'     one random geometric warp + stroke-width jitter per image
            = apply_params(x, cfg, sample_params(len(x), cfg, generator, x.device))
Probes:     rotate(x, deg), shift(x, dx, dy), scale(x, factor), shear(x, deg), stretch(x, factor),
            thicken(x), thin(x)

All take and return float tensors (B, C, H, W) with values in [0, 1] (0 = background), on any device. Only torch
is imported: this module runs on the bare GPU machine too.

Why these and not more: handwritten digits vary in position, slant and size (the affine warp) and in pen width
(dilation/erosion). One grid_sample call per batch does shift + rotation + scale together, so the cost is one
pass over the batch whatever the mix; a pure shift uses nearest-neighbour sampling at whole-pixel offsets, which
is exact (no interpolation blur).
"""
import math

import torch
import torch.nn.functional as F

# Keys an `augment` config may hold. Missing or zero means off.
#   shift: max |translation| in pixels (uniform, per axis)      rotate: max |angle| in degrees
#   scale: max relative zoom (factor drawn from [1-s, 1+s])     thicken/thin: fraction of the batch dilated/eroded
#   shear: max |slant| in degrees (x shifts in proportion to y)  stretch: max relative change of the width alone
#   flip: fraction of the batch mirrored left to right (for classes that mirror into themselves, like clothing;
#         never digits: a mirrored 2, 3, 7 or 9 is no digit). In no preset: on Fashion-MNIST, `fast` (4 epochs,
#         one thread, seeds 0 / 1) scored 91.06 / 90.73% with flip 0.5 against 91.34 / 91.39% without, and
#         `default` (24 epochs, seed 0) 92.71% against 93.09% (benchmarks/results/cpu_fashion_intel_2026-11-30.jsonl).
# Not here, on evidence: elastic distortions (Simard et al. 2003) — a smooth random 2-pixel warp added to the
# default preset's took one CPU run (seed 0, 10 epochs) from 99.60-99.67% to 99.40%.
AUGMENT_KEYS = ("shift", "rotate", "scale", "thicken", "thin", "shear", "stretch", "flip")
# How a warp (anything beyond whole-pixel shifts) samples the image: "bilinear", "bicubic" (clamped to [0, 1])
# or "nearest". Bilinear sampling at a random sub-pixel offset is a blur: on 4,000 MNIST training images the
# default preset's warp leaves 14 saturated (> 0.99) pixels per image against 43 unwarped (the test images have
# 39) and 0.39 squared-gradient energy per unit of ink against 0.59 (test: 0.61). Bicubic: 39 and 0.49;
# nearest: 43 and 0.63, with jagged edges instead. The sharper warps did not train better models (benchmarks/
# EXPERIMENTS.md, `default`: bicubic 99.70%, nearest 99.66%, bilinear 99.70%; seed 0), so the presets keep bilinear.
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def check_config(cfg: dict) -> dict:
    """Validate an augment config; returns it with every key present (0 for off, "bilinear" warps)."""
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(AUGMENT_KEYS) - {"interpolation"}
    if unknown:
        raise ValueError(f"unknown augment option(s) {sorted(unknown)}; known: "
                         f"{', '.join(AUGMENT_KEYS)}, interpolation")
    interpolation = cfg.pop("interpolation", None) or "bilinear"
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"augment interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    out = {k: float(cfg.get(k) or 0) for k in AUGMENT_KEYS}
    for k, v in out.items():
        if v < 0:
            raise ValueError(f"augment {k} must be >= 0, got {v}")
    if out["flip"] > 1:
        raise ValueError("augment flip is a fraction of the batch and must be <= 1")
    if out["thicken"] + out["thin"] > 1:
        raise ValueError("augment thicken + thin is a fraction of the batch and must be <= 1")
    for k in ("scale", "stretch"):
        if out[k] >= 1:
            raise ValueError(f"augment {k} must be < 1 (factor drawn from [1-{k}, 1+{k}])")
    if out["shear"] >= 60:
        raise ValueError("augment shear is a slant angle in degrees and must be < 60")
    out["interpolation"] = interpolation
    return out


def augment_batch(x: torch.Tensor, cfg: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random augmentation of a batch (cfg as check_config returns it). Reproducible given the generator."""
    return apply_params(x, cfg, sample_params(x.shape[0], cfg, generator, x.device))


def sample_params(b: int, cfg: dict, generator: torch.Generator | None = None, device=None) -> dict:
    """The random part of augment_batch: per-image parameters for `b` images, drawn from `generator`.

    Kept apart from apply_params so that a compiled training step can take them as inputs: torch.compile does
    not trace random ops on an explicit generator, and everything after the draw compiles into a few kernels."""
    def uniform(lo, hi):
        return torch.rand(b, device=device, generator=generator) * (hi - lo) + lo

    params = {}
    if cfg["shift"] or cfg["rotate"] or cfg["scale"] or cfg.get("shear") or cfg.get("stretch"):
        s = cfg["shift"]
        if _smooth(cfg):
            params["dx"], params["dy"] = uniform(-s, s), uniform(-s, s)
        else:
            # Whole-pixel shifts, uniform over {-s, ..., s}.
            n = int(s)
            params["dx"] = torch.randint(-n, n + 1, (b,), device=device, generator=generator).float()
            params["dy"] = torch.randint(-n, n + 1, (b,), device=device, generator=generator).float()
        params["angle"] = uniform(-cfg["rotate"], cfg["rotate"]) * (math.pi / 180)
        params["zoom"] = uniform(1 - cfg["scale"], 1 + cfg["scale"])
        if cfg.get("shear") or cfg.get("stretch"):
            params["shear"] = torch.tan(uniform(-cfg.get("shear", 0), cfg.get("shear", 0)) * (math.pi / 180))
            params["stretch"] = uniform(1 - cfg.get("stretch", 0), 1 + cfg.get("stretch", 0))
    if cfg["thicken"] or cfg["thin"]:
        params["u"] = torch.rand(b, 1, 1, 1, device=device, generator=generator)
    if cfg.get("flip"):
        params["flip_u"] = torch.rand(b, 1, 1, 1, device=device, generator=generator)
    return params


def apply_params(x: torch.Tensor, cfg: dict, params: dict) -> torch.Tensor:
    """The deterministic part of augment_batch: warp and stroke-width change by sample_params' parameters."""
    if "dx" in params:
        extra = {k: params[k] for k in ("shear", "stretch") if k in params}
        x = _warp(x, params["angle"], params["zoom"], params["dx"], params["dy"],
                  mode=cfg.get("interpolation", "bilinear") if _smooth(cfg) else "nearest", **extra)
    if "u" in params:
        u = params["u"]
        # only the enabled op is computed: each one is a full pass over the batch on every training step
        if cfg["thicken"]:
            x = torch.where(u < cfg["thicken"], thicken(x), x)
        if cfg["thin"]:
            x = torch.where((u >= cfg["thicken"]) & (u < cfg["thicken"] + cfg["thin"]), thin(x), x)
    if "flip_u" in params:
        x = torch.where(params["flip_u"] < cfg["flip"], x.flip(-1), x)
    return x


def _smooth(cfg):
    """Whether the warp interpolates (anything but a pure whole-pixel shift)."""
    return bool(cfg["rotate"] or cfg["scale"] or cfg.get("shear") or cfg.get("stretch"))


def _warp(x, angle, zoom, dx, dy, mode="bilinear", shear=None, stretch=None):
    """Slant by `shear` (tan of the angle; x moves right by shear * height above the centre) and widen by
    `stretch`, then rotate by `angle` (radians, counter-clockwise as displayed), zoom by `zoom` about the centre,
    and move the content by (dx, dy) pixels (+x right, +y down). Per-image 1-D tensors (shear/stretch optional);
    zeros fill what comes in."""
    b, _, h, w = x.shape
    # affine_grid maps each output pixel to the input position it samples from, in coordinates where the image
    # spans [-1, 1] (align_corners=False: one pixel = 2/w). The forward map of the content is
    # p' = zoom * R(angle) * K * p + t, with K = [[stretch, -shear], [0, 1]] (y points down, so content above the
    # centre has negative y and -shear moves it right); the grid needs its inverse, (zoom R K)^-1 (p' - t).
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # R(-angle)/zoom; images have y pointing down, so a counter-clockwise turn on screen is clockwise in (x, y).
    a, bb, c, d = cos, -sin, sin, cos
    if shear is not None:
        # K^-1 = [[1/stretch, shear/stretch], [0, 1]]; the inverse map is K^-1 · R^-1 / zoom.
        inv_s = 1.0 / stretch
        a, bb, c, d = inv_s * (a + shear * c), inv_s * (bb + shear * d), c, d
    tx, ty = dx * (2.0 / w), dy * (2.0 / h)
    theta = torch.stack([
        torch.stack([a, bb, -(a * tx + bb * ty)], dim=1),
        torch.stack([c, d, -(c * tx + d * ty)], dim=1),
    ], dim=1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.clamp(0.0, 1.0) if mode == "bicubic" else out     # bicubic over- and undershoots at edges


def _per_image(value, x):
    return torch.full((x.shape[0],), float(value), device=x.device, dtype=torch.float32)


def rotate(x: torch.Tensor, deg: float) -> torch.Tensor:
    """Rotate counter-clockwise (as displayed) by `deg` degrees about the image centre; bilinear."""
    if deg == 0:
        return x.clone()
    zero = _per_image(0.0, x)
    return _warp(x, _per_image(math.radians(deg), x), _per_image(1.0, x), zero, zero)


def shift(x: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """Move the content by (dx, dy) pixels (+x right, +y down), zero-filling. Whole-pixel shifts are exact."""
    whole = float(dx).is_integer() and float(dy).is_integer()
    return _warp(x, _per_image(0.0, x), _per_image(1.0, x), _per_image(dx, x), _per_image(dy, x),
                 mode="nearest" if whole else "bilinear")


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom about the image centre by `factor` (> 1 enlarges the digit); bilinear."""
    if factor <= 0:
        raise ValueError(f"scale factor must be > 0, got {factor}")
    zero = _per_image(0.0, x)
    return _warp(x, zero, _per_image(factor, x), zero, zero)


def shear(x: torch.Tensor, deg: float) -> torch.Tensor:
    """Slant by `deg` degrees about the image centre (> 0 leans the top to the right, like italics); bilinear."""
    zero, one = _per_image(0.0, x), _per_image(1.0, x)
    return _warp(x, zero, one, zero, zero, shear=_per_image(math.tan(math.radians(deg)), x), stretch=one)


def stretch(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Widen (factor > 1) or narrow the content about the vertical centre line, leaving its height; bilinear."""
    if factor <= 0:
        raise ValueError(f"stretch factor must be > 0, got {factor}")
    zero, one = _per_image(0.0, x), _per_image(1.0, x)
    return _warp(x, zero, one, zero, zero, shear=zero, stretch=_per_image(factor, x))


def thicken(x: torch.Tensor) -> torch.Tensor:
    """Grey-scale dilation with a 2×2 square: strokes grow by one pixel (a 3×3 one would double a 2-pixel
    MNIST stroke, which no longer looks like handwriting)."""
    return F.max_pool2d(F.pad(x, (0, 1, 0, 1)), kernel_size=2, stride=1)


def thin(x: torch.Tensor) -> torch.Tensor:
    """Grey-scale erosion with a 2×2 square (the dual of thicken); outside the image counts as background."""
    return -F.max_pool2d(F.pad(-x, (0, 1, 0, 1), value=0.0), kernel_size=2, stride=1)
