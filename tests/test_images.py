"""prepare_digit turns any picture of a digit into an MNIST-style 28×28 array; unreadable input is a DataError."""
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from deepdive.data.images import fit_picture, load_image_file, prepare_digit, read_image
from deepdive.errors import DataError

SEVEN = [(50, 60), (150, 60), (80, 250)]  # a thick "7", 100 wide and 190 tall, on a 200×300 page


def draw(mode="RGB", ink="black", paper="white", size=(200, 300), points=SEVEN, width=28):
    image = Image.new(mode, size, paper)
    ImageDraw.Draw(image).line(points, fill=ink, width=width, joint="curve")
    return image


def centre_of_mass(a):
    a = a.astype(np.float64)
    rows, cols = np.arange(a.shape[0]), np.arange(a.shape[1])
    return (a.sum(1) * rows).sum() / a.sum(), (a.sum(0) * cols).sum() / a.sum()


def bbox(a):
    rows, cols = np.nonzero(a)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def assert_mnist_like(a, tall=True):
    assert a.shape == (28, 28) and a.dtype == np.uint8
    frame = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    assert frame.max() == 0 and np.median(a) == 0  # dark background, the digit does not touch the edge
    assert a.max() >= 250  # strokes are full white ink
    h, w = bbox(a)
    assert max(h, w) in (20, 21) and min(h, w) < 20  # fitted to 20 px (±1 for antialiasing), aspect kept
    assert (h > w) == tall
    cy, cx = centre_of_mass(a)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5  # the shift is rounded to whole pixels


@pytest.mark.parametrize("image", [
    draw("RGB"),
    draw("L", ink=0, paper=255),
    draw("RGBA", ink=(0, 0, 0, 255), paper=(255, 255, 255, 255)),
    draw("RGBA", ink=(0, 0, 0, 255), paper=(0, 0, 0, 0)),  # black strokes on a transparent canvas
    draw("RGBA", ink=(255, 255, 255, 255), paper=(0, 0, 0, 0)),  # white strokes on a transparent canvas
    draw("RGB", ink="white", paper="black"),  # already MNIST polarity
    draw("RGB", ink=(40, 40, 90), paper=(200, 190, 170)),  # blue pen on grey-beige paper (a photo)
], ids=["rgb", "L", "rgba-opaque", "rgba-black-on-clear", "rgba-white-on-clear", "inverted", "photo"])
def test_prepare_digit_any_mode(image):
    a = prepare_digit(image)
    assert_mnist_like(a)
    reference = prepare_digit(draw("RGB"))
    assert np.abs(a.astype(int) - reference).mean() < 1  # polarity, alpha and paper colour do not matter


def test_wide_small_and_offcentre_digits():
    wide = draw(points=[(20, 150), (180, 150)], width=30)  # a dash: wider than tall
    assert_mnist_like(prepare_digit(wide), tall=False)
    tiny = draw(size=(12, 14), points=[(3, 2), (9, 2), (5, 12)], width=2)  # upscaled, not just copied
    assert_mnist_like(prepare_digit(tiny))
    corner = draw(size=(800, 600), points=[(20, 20), (60, 20), (35, 90)], width=10)  # far from the centre
    assert_mnist_like(prepare_digit(corner))


def test_sixteen_bit_png(tmp_path):
    a = np.full((300, 200), 65535, np.uint16)
    a[50:250, 90:115] = 0  # a "1"
    path = tmp_path / "one16.png"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode.startswith("I")
    out = load_image_file(path)
    h, w = bbox(out)
    assert h == 20 and w <= 4 and out.max() == 255


def test_thin_one_keeps_its_aspect():
    a = prepare_digit(draw(points=[(100, 30), (100, 270)], width=20))
    h, w = bbox(a)
    assert h == 20 and w <= 4


@pytest.mark.parametrize("image", [
    Image.new("RGB", (50, 50), "white"),
    Image.new("L", (50, 50), 0),
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)),
    Image.fromarray(np.random.default_rng(0).integers(120, 140, (50, 50), dtype=np.uint8)),  # faint noise
])
def test_blank_image_is_an_error(image):
    with pytest.raises(DataError, match="blank.png: no digit found: the image is blank"):
        prepare_digit(image, name="blank.png")


def test_load_image_file_png_and_jpeg(tmp_path):
    reference = prepare_digit(draw())
    for name in ("seven.png", "seven.jpg"):
        draw().save(tmp_path / name)
        a = load_image_file(tmp_path / name)
        assert_mnist_like(a)
        assert np.abs(a.astype(int) - reference).mean() < 1  # JPEG artefacts stay below the ink threshold


def test_blank_file_error_names_the_file(tmp_path):
    Image.new("L", (30, 30), 255).save(tmp_path / "empty.png")
    with pytest.raises(DataError, match=f"{tmp_path / 'empty.png'}: no digit found"):
        load_image_file(tmp_path / "empty.png")


def test_unreadable_files(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image")
    with pytest.raises(DataError, match=f"{tmp_path / 'notes.png'}: not a readable image: "):
        load_image_file(tmp_path / "notes.png")
    draw().save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.png: not a readable image: "):
        load_image_file(tmp_path / "cut.png")
    with pytest.raises(DataError, match="missing.png: no such file"):
        load_image_file(tmp_path / "missing.png")


def test_fit_picture_gives_back_an_upscaled_picture_exactly(mnist):
    # what the dashboard's canvas sends for an analysed image it shows 10x: the same 28x28 pixels come back
    digit = mnist.test_images[0]
    big = Image.fromarray(digit).resize((280, 280), Image.Resampling.NEAREST).convert("RGBA")
    np.testing.assert_array_equal(fit_picture(big, (28, 28), 1), digit)
    rgb = np.random.default_rng(0).integers(0, 256, (8, 6, 3)).astype(np.uint8)
    up = Image.fromarray(rgb).resize((18, 24), Image.Resampling.NEAREST)
    np.testing.assert_array_equal(fit_picture(up, (8, 6), 3), rgb)


def test_fit_picture_puts_transparency_on_black_and_reads_bytes():
    image = Image.new("RGBA", (4, 4), (255, 255, 255, 0))
    image.putpixel((1, 2), (255, 255, 255, 255))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    buf.seek(0)
    out = fit_picture(read_image(buf, "canvas"), (4, 4), 1)
    assert out[2, 1] == 255 and out.sum() == 255
    with pytest.raises(DataError, match="canvas: not a readable image"):
        read_image(io.BytesIO(b"not a png"), "canvas")
    with pytest.raises(DataError, match="1 or 3 channels"):
        fit_picture(image, (4, 4), 2)
