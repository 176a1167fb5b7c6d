"""Backend test settings shared by every file."""

from __future__ import annotations

import pytest


def _private_dir(tmp_path_factory, variable: str, name: str):
    """`variable` points at a fresh folder for the whole session, then back at what it was."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(variable, str(tmp_path_factory.mktemp(name)))
        yield


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Parameter counts (models/catalog.py) are cached on disk: keep the user's cache dir out of tests."""
    from rsseg.models.catalog import ENV_CACHE_DIR

    yield from _private_dir(tmp_path_factory, ENV_CACHE_DIR, "rsseg-cache")


@pytest.fixture(autouse=True, scope="session")
def _private_models_dir(tmp_path_factory):
    """Finished training runs are remembered under "My models" (bundles/index.py): never in the user's list."""
    from rsseg.bundles.index import ENV_MODELS_DIR

    yield from _private_dir(tmp_path_factory, ENV_MODELS_DIR, "rsseg-models")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two threads on a shared 2-core machine can be ~50x slower than one; the results don't change.
    Training tests use it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
