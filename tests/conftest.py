import os
import sys
import tempfile

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # tests/zoo.py
# pretrained=True never reaches the network or the user's cache from a test: tests/test_hub.py serves its
# files on the loopback and lifts VZOO_OFFLINE itself (subprocesses inherit both)
os.environ["VZOO_OFFLINE"] = "1"
os.environ["VZOO_CACHE"] = tempfile.mkdtemp(prefix="vzoo-test-cache-")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
