from pathlib import Path

import pytest

from attnlens.analysis.engine import Engine
from attnlens.models.loading import load_model

DATA = Path(__file__).resolve().parents[1] / "data"
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="session")
def default_model():
    return load_model(device="cpu")


@pytest.fixture(scope="session")
def engine(default_model):
    return Engine(default_model)


@pytest.fixture(scope="session")
def photos():
    """Real photos (CC0, from scikit-image's sample data): a cat and an espresso."""
    return {"cat": (DATA / "chelsea.jpg").read_bytes(), "espresso": (DATA / "coffee.jpg").read_bytes()}
