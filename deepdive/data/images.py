"""Turn a user's picture of a digit (any size, mode, polarity) into a 28×28 uint8 array shaped like MNIST.

MNIST digits were size-normalised to fit a 20×20 box (aspect ratio kept, antialiased), then placed in a 28×28
field so that their centre of mass sits at the centre: measured on the real test set it is at (14.0, 14.0) in
pixel-index coordinates, with white ink on black. A classifier trained on MNIST only works on inputs prepared
the same way, so predict runs every image through prepare_digit.
"""
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from deepdive.errors import DataError

SIZE = 28  # output field
BOX = 20  # the digit's longest side after resizing
CENTRE = 14.0  # target centre of mass (row, col), as measured on MNIST
INK_THRESHOLD = 0.2  # fraction of the strongest stroke that counts as ink when cropping
MIN_CONTRAST = 32  # grey levels between background and strongest stroke below which an image is blank


def open_image(path) -> Image.Image:
    """Open and fully decode an image file; anything PIL cannot read becomes a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return read_image(path, str(path))


def read_image(source, name="image", max_pixels: int | None = None) -> Image.Image:
    """Fully decode an image from a path or a binary file object (PNG, JPEG, ...); anything PIL cannot read, or
    larger than max_pixels (checked before decoding), becomes a DataError naming `name`."""
    try:
        with Image.open(source) as image:
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise DataError(f"{name} is {image.width}×{image.height} pixels; at most {max_pixels:,} are taken")
            image.load()  # decode now, so truncated or corrupt data fails here and not later
            return image
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise DataError(f"{name}: not a readable image: {e}") from None


def load_image_file(path) -> np.ndarray:
    """Read an image file and prepare it as an MNIST digit: uint8 (28, 28), white ink on black."""
    return prepare_digit(open_image(path), name=str(path))


def prepare_digit(image: Image.Image, name=None) -> np.ndarray:
    """Prepare one digit the way MNIST digits were: uint8 (28, 28), white ink on black, centred by mass.

    Grey (alpha composited onto a contrasting backdrop) → invert if the border is light → stretch so the
    background is 0 and the strongest stroke 255 → crop to the ink → fit in 20×20 (antialiased) → paste so the
    centre of mass lands on (14, 14), clamped so no ink leaves the field. A blank image is a DataError.
    """
    name = name or getattr(image, "filename", None) or "image"
    gray = _to_gray(ImageOps.exif_transpose(image), name)

    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 127:  # dark ink on light paper: MNIST is light ink on black
        gray, background = 255 - gray, 255 - background
    ink = np.clip(gray - background, 0, None)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise DataError(f"{name}: no digit found: the image is blank (no stroke stands out from the background)")
    ink *= 255 / peak

    rows, cols = np.nonzero(ink > INK_THRESHOLD * 255)
    ink = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    h, w = ink.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Pillow widens the filter when shrinking, so BILINEAR is antialiased; unlike LANCZOS its kernel is
    # non-negative, so it leaves no faint ringing halo around the strokes
    glyph = np.asarray(Image.fromarray(ink.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))

    mass = glyph.sum()
    cy = (glyph.sum(axis=1) * np.arange(glyph.shape[0])).sum() / mass
    cx = (glyph.sum(axis=0) * np.arange(glyph.shape[1])).sum() / mass
    top = int(np.clip(round(CENTRE - cy), 0, SIZE - glyph.shape[0]))
    left = int(np.clip(round(CENTRE - cx), 0, SIZE - glyph.shape[1]))
    out = np.zeros((SIZE, SIZE), np.float32)
    out[top: top + glyph.shape[0], left: left + glyph.shape[1]] = glyph
    return np.round(out).astype(np.uint8)


def fit_picture(image: Image.Image, size, channels: int) -> np.ndarray:
    """A whole picture as a model's input field, as it is (no centring): transparency composited onto black,
    grey for one channel or RGB for three, resized to size (H, W) by area averaging, so a picture scaled up by a
    whole factor comes back exactly. uint8 (H, W) or (H, W, 3)."""
    if channels not in (1, 3):
        raise DataError(f"a picture can be made into 1 or 3 channels, not {channels}")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "black"), rgba)
    try:
        image = image.convert("L" if channels == 1 else "RGB")
    except ValueError as e:
        raise DataError(f"unsupported image mode {image.mode}: {e}") from None
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8).copy()


def _to_gray(image: Image.Image, name) -> np.ndarray:
    """Float32 grey levels in 0..255, whatever the mode."""
    if image.mode.startswith("I;16"):
        return np.asarray(image, dtype=np.float32) / 257
    if image.mode in ("I", "F"):  # no fixed range: stretch what is there
        a = np.asarray(image, dtype=np.float32)
        span = float(a.max() - a.min())
        return (a - a.min()) * (255 / span) if span else np.zeros_like(a)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        # strokes drawn on a transparent canvas may be light (dark-mode apps): put them on a backdrop they show on
        opaque = np.asarray(rgba.convert("L"))[alpha > 127]
        backdrop = "black" if opaque.size and np.median(opaque) > 127 else "white"
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, backdrop), rgba)
    try:
        return np.asarray(image.convert("L"), dtype=np.float32)
    except ValueError as e:
        raise DataError(f"{name}: unsupported image mode {image.mode}: {e}") from None
