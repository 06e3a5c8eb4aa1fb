import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(1)


def pytest_configure(config):
    # transformers prints a torchvision notice on import; the tests need no image processors from it.
    import transformers

    transformers.logging.set_verbosity_error()


@pytest.fixture
def seeded():
    """A CPU generator factory: seeded(0) -> torch.Generator."""
    return lambda seed=0: torch.Generator().manual_seed(seed)


class CallCounter:
    """Counts forward calls of a module (to prove errors are raised before any model evaluation)."""

    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_pre_hook(self._count)

    def _count(self, *_):
        self.calls += 1

    def remove(self):
        self.handle.remove()


@pytest.fixture
def count_calls():
    counters = []

    def attach(module):
        counter = CallCounter(module)
        counters.append(counter)
        return counter

    yield attach
    for counter in counters:
        counter.remove()
