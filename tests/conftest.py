from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder beside the repo; tests that need it skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def wordnet_dir(shared_data) -> Path:
    path = shared_data / "wordnet"
    if not (path / "wordnet_is_a.txt").is_file():
        pytest.skip(f"WordNet files not found in {path}")
    return path


@pytest.fixture(scope="session")
def clothing_dir(shared_data) -> Path:
    path = shared_data / "clothing"
    if not (path / "images.csv").is_file():
        pytest.skip(f"clothing data not found in {path}")
    return path
