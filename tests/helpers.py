"""Helpers shared by the tests: random weights, image encoding, decoding the API's PNG data URLs."""
import base64
import io

import torch
from PIL import Image


def randomise(module, seed=0, scale=0.5):
    """Every parameter of ``module`` drawn from N(0, scale^2) with a fixed seed (in place); returns it."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * scale)
    return module


def encode(image: Image.Image, format: str, **params) -> bytes:
    """``image`` saved in ``format`` (Pillow's name, e.g. "JPEG"), as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **params)
    return buffer.getvalue()


def png_of(data_url: str) -> Image.Image:
    """The image of a ``data:image/png;base64,...`` URL."""
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
