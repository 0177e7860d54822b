"""The fast tier's training loop, shared by the frozen-table head (``distill.fit_student``) and the tuned table
(``table_tuning.fit_tuned_student``): one thread, seeded batches, mean squared error, the runtime's head layout."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from tqdm.auto import tqdm


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: a small MLP on batches of 64 only waits on a second one (2x slower on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_epochs(
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    n_rows: int,
    optimizers: Sequence[torch.optim.Optimizer],
    epochs: int,
    batch_size: int,
    seed: int,
    desc: str,
    progress: bool = False,
) -> None:
    """``epochs`` passes over ``n_rows`` in a seeded order; ``loss_of(rows)`` is one batch's loss, each optimizer steps on it."""
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress):
        order = torch.randperm(n_rows, generator=generator)
        for start in range(0, n_rows, batch_size):
            loss = loss_of(order[start : start + batch_size])
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()


def head_arrays(first: torch.nn.Linear, last: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    """The runtime's head layout (``runtime/scoring/heads.py``): [W1 | length weight | b1] and [w2 | b2], float32."""
    hidden = torch.cat([first.weight, first.bias[:, None]], dim=1).detach().numpy().astype(np.float32)
    output = torch.cat([last.weight, last.bias[:, None]], dim=1).detach().numpy().astype(np.float32)
    return hidden, output
