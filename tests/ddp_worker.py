"""One process of tests/test_distributed.py: a few steps of fit() on a tiny MLP; process 0 saves the weights.

Run alone (one process) or under torchrun (several); the data and the seed are the same either way."""
import sys

import torch

from course_lib.core import distributed
from course_lib.core.train import fit

GLOBAL_BATCH, STEPS = 8, 5


def batches(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randn(GLOBAL_BATCH, 6, generator=generator), torch.randint(3, (GLOBAL_BATCH,), generator=generator)


def train() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    loss = lambda m, batch: torch.nn.functional.cross_entropy(m(batch[0]), batch[1])  # noqa: E731
    fit(model, loss, batches(), steps=STEPS, optimizer=optimizer, device="cpu", show_progress=False)
    return model


if __name__ == "__main__":
    trained = train()
    if distributed.is_main():
        torch.save(trained.state_dict(), sys.argv[1])
    distributed.teardown()
