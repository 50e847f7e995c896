import os

import pytest
import torch

# Tests run on 2 cores next to other work: keep torch to one intra-op thread for stable timing.
torch.set_num_threads(int(os.environ.get("MARGINLAB_TEST_THREADS", "1")))


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)
