"""Test-session settings shared by every test module."""

import os
from pathlib import Path

import pytest
import torch

# One intra-op thread: the suite's tensors are small, and on a loaded 2-core machine OpenMP threads that spin
# against each other (or against another process) slow small ops down by an order of magnitude. Timings are
# never asserted in tests; speed lives in bench/.
torch.set_num_threads(1)


# Drawings that tests leave for a person to look at (samples of each task with their truth overlaid).
# CI can collect this folder as an artifact; set OMNIVIS_TEST_ARTIFACTS to put it elsewhere.
ARTIFACTS = Path(os.environ.get("OMNIVIS_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """A folder kept after the run, for images a person should be able to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
