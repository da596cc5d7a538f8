"""Image bytes -> an upright RGB ``PIL.Image``, or a clear error saying what is wrong with the bytes.

Only the formats we accept are opened (``Image.open(formats=...)``); EXIF orientation is applied;
multi-frame files give their first frame; every mode becomes 8-bit RGB without surprises: 16-bit
greyscale is scaled (``convert("RGB")`` would clip it), and transparent pixels are composited onto a
fixed grey instead of reappearing. Decompression bombs are errors, not warnings.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ACCEPTED_FORMATS", "BACKGROUND", "ImageError", "ImageTooLarge", "UndecodableImage", "UnsupportedImage",
           "decode_image"]

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF", b"GIF89a": "GIF",
              b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"BM": "BMP"}


def _signature(data: bytes) -> str | None:
    """The accepted format whose magic bytes ``data`` starts with, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in SIGNATURES.items() if data.startswith(magic)), None)
BACKGROUND = (128, 128, 128)  # what transparent pixels are shown on
DEFAULT_MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """Bytes that are not an image we can analyse; ``detail`` says why. Subclasses say which case."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class UnsupportedImage(ImageError):
    """Not an image in one of ``ACCEPTED_FORMATS``."""


class UndecodableImage(ImageError):
    """Empty, corrupt or truncated: it claims a format we read but does not decode."""


class ImageTooLarge(ImageError):
    """More pixels than allowed (checked before decoding), or a decompression bomb."""


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(values.max(), 1.0)
        return Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info or image.mode in ("LA", "PA", "La"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", image.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _unidentified(data: bytes) -> ImageError:
    """What to say of bytes PIL does not identify: a corrupt file of a format we read, or not an image we read."""
    if declared := _signature(data):
        return UndecodableImage(f"cannot decode the image: a corrupt or truncated {declared} file")
    return UnsupportedImage(f"not an image in a supported format ({', '.join(ACCEPTED_FORMATS)})")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``data`` to an upright RGB image; raises ``UnsupportedImage``, ``UndecodableImage`` or
    ``ImageTooLarge``."""
    if not data:
        raise UndecodableImage("the upload is empty")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageTooLarge(f"image has too many pixels: {error}") from None
        except UnidentifiedImageError:
            raise _unidentified(data) from None
        except (OSError, ValueError, SyntaxError) as error:
            raise UndecodableImage(f"cannot decode the image: {error}") from None
        except Exception:  # noqa: BLE001 - Image.open patched by a library the model imported (ultralytics, for HEIC,
            raise _unidentified(data) from None  # raises ModuleNotFoundError: pi_heif where PIL says unidentified)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(f"image has {width}x{height} = {width * height} pixels, more than {max_pixels}")
        try:
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageTooLarge(f"image has too many pixels: {error}") from None
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise UndecodableImage(f"cannot decode the image: {error}") from None
