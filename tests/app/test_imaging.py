"""Decoding uploads: every mode to faithful RGB, EXIF orientation, first frames, clear errors."""

import numpy as np
import pytest
from PIL import Image

from attnlens.analysis.imaging import BACKGROUND, ImageTooLarge, UndecodableImage, UnsupportedImage, decode_image
from tests.helpers import encode


def test_sixteen_bit_grey_is_scaled_not_clipped():
    dark = Image.fromarray(np.full((4, 5), 1000, dtype="<u2"))
    assert dark.mode == "I;16"
    rgb = decode_image(encode(dark, "PNG"))
    assert rgb.mode == "RGB" and rgb.size == (5, 4)
    assert np.asarray(rgb).max() == round(1000 / 65535 * 255)  # dark stays dark (convert("RGB") gives 255)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_show_the_background(mode):
    image = Image.new(mode, (3, 2), (255, 0) if mode == "LA" else (255, 0, 0, 0))  # fully transparent
    assert np.asarray(decode_image(encode(image, "PNG")))[0, 0].tolist() == list(BACKGROUND)


def test_palette_transparency():
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    rgb = decode_image(encode(image, "PNG", transparency=1))
    assert np.asarray(rgb)[0, 0].tolist() == list(BACKGROUND)


@pytest.mark.parametrize("mode, format", [("CMYK", "JPEG"), ("1", "PNG"), ("L", "BMP"), ("RGB", "WEBP"), ("P", "GIF")])
def test_modes_and_formats(mode, format):
    image = Image.new("RGB", (9, 7), (200, 40, 10)).convert(mode)
    rgb = decode_image(encode(image, format))
    assert rgb.mode == "RGB" and rgb.size == (9, 7)


@pytest.mark.parametrize("format", ["GIF", "TIFF"])
def test_multi_frame_files_give_the_first_frame(format):
    frames = [Image.new("RGB", (6, 6), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    data = encode(frames[0], format, save_all=True, append_images=frames[1:])
    assert np.asarray(decode_image(data))[0, 0, 0] > 200


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (60, 40), (10, 200, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    assert decode_image(encode(image, "JPEG", exif=exif)).size == (40, 60)


@pytest.mark.parametrize("data, error_class", [
    (b"", UndecodableImage),
    (b"hello, I am text", UnsupportedImage),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", UnsupportedImage),
    (b"<html><body>hi</body></html>", UnsupportedImage),
])
def test_not_images(data, error_class):
    with pytest.raises(error_class) as error:
        decode_image(data)
    assert error.value.detail


def test_an_image_open_patched_by_a_library_still_says_not_an_image(monkeypatch):
    """ultralytics (imported by a YOLO checkpoint) patches ``Image.open`` for HEIC: where PIL says unidentified, it
    raises ModuleNotFoundError (no pi_heif). A text upload is still not an image, and a cut JPEG still corrupt."""
    from PIL import UnidentifiedImageError

    real_open = Image.open

    def patched_open(*args, **kwargs):
        try:
            return real_open(*args, **kwargs)
        except UnidentifiedImageError:
            raise ModuleNotFoundError("No module named 'pi_heif'") from None

    monkeypatch.setattr(Image, "open", patched_open)
    with pytest.raises(UnsupportedImage, match="not an image"):
        decode_image(b"hello, I am text")
    with pytest.raises(UndecodableImage, match="corrupt or truncated"):
        decode_image(b"\xff\xd8\xff\xe0" + bytes(20))
    assert decode_image(encode(Image.new("RGB", (8, 6)), "PNG")).size == (8, 6)


def test_truncated_image_is_400():
    data = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    with pytest.raises(UndecodableImage):
        decode_image(data[: len(data) // 2])


def test_too_many_pixels_is_413_before_decoding():
    data = encode(Image.new("L", (300, 200)), "PNG")
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=50_000)
