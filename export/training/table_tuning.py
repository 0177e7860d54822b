"""The fast tier's static table tuned with its head: the student learns which tokens tell the teacher's score.

The frozen table is MiniLM's token outputs, averaged over whatever text each token was seen in: the words
that tell a hard request from an easy one ("prove", "villanelle", "O(n log n)") weigh no more there than
filler. Fitting the table's rows with the head moves just the rows of tokens the distillation prompts hold
(sparse updates), so the runtime's arithmetic and the bundle's format stay exactly as they are: a table
lookup, a sum, a normalization and the same MLP. Rows of tokens never seen keep their MiniLM values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgeroute.runtime import Router
from edgeroute.runtime.errors import InvalidInputError

from edgeroute.export.checkpoints import CheckpointError
from edgeroute.export.training.student_loop import head_arrays, one_thread, run_epochs
from edgeroute.runtime.scoring.router import clean_prompt, cut_prompt

if TYPE_CHECKING:  # distill imports this module
    from edgeroute.export.training.distill import StudentRecipe


@dataclass(frozen=True)
class TokenRows:
    """Each prompt's token ids as the runtime's static embedder reads them (cut, no special tokens, truncated)."""

    ids: tuple[np.ndarray, ...]

    @classmethod
    def of(cls, router: Router, prompts: Sequence[str]) -> TokenRows:
        """The ids ``router``'s static embedder sums for each of ``prompts`` (cut, then cleaned, as ``Router`` does)."""
        tokenizer = router.scorer.embedder.tokenizer  # type: ignore[union-attr]
        cut = [clean_prompt(cut_prompt(prompt, router.manifest.max_length), position) for position, prompt in enumerate(prompts)]
        return cls(tuple(np.asarray(encoding.ids, dtype=np.int64) for encoding in tokenizer.encode_batch(cut, add_special_tokens=False)))

    def subset(self, rows: np.ndarray) -> TokenRows:
        """The ids of ``rows`` only, in their order."""
        return TokenRows(tuple(self.ids[row] for row in rows))

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``EmbeddingBag`` inputs for ``rows``: the ids laid end to end and each prompt's offset."""
        chosen = [self.ids[row] for row in rows]
        offsets = np.cumsum([0] + [len(ids) for ids in chosen[:-1]])
        flat = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
        return torch.from_numpy(flat), torch.from_numpy(offsets)


def tuning_inputs(tokens: TokenRows | None, table: np.ndarray | None) -> tuple[TokenRows, np.ndarray]:
    """``tokens`` and ``table``, which a tuned-table recipe cannot go without."""
    if tokens is None or table is None:
        raise InvalidInputError(
            "table_learning_rate > 0 needs the prompts' tokens and the static table: pass tokens=TokenRows.of(router, prompts) "
            "and table=router.scorer.embedder.table"
        )
    return tokens, table


def tuned_features(table: np.ndarray, tokens: TokenRows, features: np.ndarray) -> np.ndarray:
    """``features`` (embedding columns, then the length feature) with the embedding columns read from a tuned ``table``."""
    return np.concatenate([embed_rows(table, tokens), features[:, -1:]], axis=1)


def table_learning_rate(router: Router) -> float:
    """The learning rate its static table was tuned at when ``router`` was distilled (0.0: a frozen table)."""
    manifest = json.loads(router.manifest.path.read_text(encoding="utf-8"))
    recipe = manifest.get("source", {}).get("training", {}).get("recipe", {})
    return float(recipe.get("table_learning_rate", 0.0))


def frozen_static_router(path: str) -> Router:
    """Load a static-embedder bundle whose table no teacher tuned: cross-validation on the shared prompts, or another
    tuning, must not start from rows that were fitted to them."""
    router = Router.load(path)
    rate = table_learning_rate(router)
    if rate > 0.0:
        raise CheckpointError(
            f"{router.manifest.path}: its static table was tuned to a teacher on the shared prompts (table_learning_rate {rate:g}); "
            "pass a bundle with the frozen table, e.g. the last one before tuning: mkdir -p ckpt/static-src && git archive 3601661 "
            "models/static-distilled-gpt4-mixtral | tar -x -C ckpt/static-src --strip-components=2 (needs the git history)"
        )
    return router


def embed_rows(table: np.ndarray, tokens: TokenRows) -> np.ndarray:
    """The runtime's static embeddings from ``table``: each prompt's rows summed, then L2-normalized (zeros if none)."""
    out = np.zeros((len(tokens.ids), table.shape[1]), dtype=np.float32)
    for row, ids in enumerate(tokens.ids):
        vector = table[ids].astype(np.float32).sum(axis=0)
        norm = float(np.sqrt(vector @ vector))
        out[row] = vector / norm if norm > 0.0 else 0.0
    return out


class _TunedStudent(torch.nn.Module):
    """Table rows summed and normalized as the runtime does, the length feature beside them, then the MLP."""

    def __init__(self, table: np.ndarray, hidden: int) -> None:
        super().__init__()
        weights = torch.from_numpy(np.asarray(table, dtype=np.float32).copy())
        self.bag = torch.nn.EmbeddingBag.from_pretrained(weights, freeze=False, mode="sum", sparse=True)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(weights.shape[1] + 1, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

    def forward(self, flat: torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        vectors = self.bag(flat, offsets)
        vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return self.mlp(torch.cat([vectors, lengths[:, None]], dim=1)).squeeze(-1)


def fit_tuned_student(
    tokens: TokenRows, lengths: np.ndarray, targets: np.ndarray, table: np.ndarray, recipe: StudentRecipe, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit the table's rows and the MLP head together by mean squared error on the standardized ``targets``.

    Returns the tuned table rounded to the bundle's float16 and the (``head.npy``, ``head_out.npy``) arrays.
    """
    spread = float(np.std(targets))
    if not recipe.table_learning_rate > 0.0 or not spread > 0.0:
        raise InvalidInputError(
            f"table tuning needs a positive learning rate (got {recipe.table_learning_rate:g}) and teacher scores that "
            f"differ (their spread is {spread:g}); pass --tune-table > 0 and a teacher that tells prompts apart"
        )
    with one_thread():
        torch.manual_seed(recipe.seed)
        net = _TunedStudent(table, recipe.hidden)
        head_optimizer = torch.optim.AdamW(net.mlp.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
        table_optimizer = torch.optim.SparseAdam(list(net.bag.parameters()), lr=recipe.table_learning_rate)
        length_inputs = torch.as_tensor(lengths, dtype=torch.float32)
        # Standardized: the table's step size then means the same for any teacher's logit spread (fold_length
        # puts the student back on the teacher's scale). Chosen on held-out fidelity to the teacher (docs/training.md).
        outputs = torch.as_tensor((targets - np.mean(targets)) / spread, dtype=torch.float32)

        def loss_of(rows: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.mse_loss(net(*tokens.batch(rows.numpy()), length_inputs[rows]), outputs[rows])

        optimizers = [head_optimizer, table_optimizer]
        run_epochs(loss_of, len(outputs), optimizers, recipe.epochs, recipe.batch_size, recipe.seed, "fit student and table", progress)
        return net.bag.weight.detach().numpy().astype(np.float16), *head_arrays(net.mlp[0], net.mlp[2])
