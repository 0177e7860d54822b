"""The fast tier by distillation: a static-embedding student fitted to a transformer router's logits.

The teacher is any router bundle; the shipped one is the transformer tier (``train probe``). Its
knowledge reaches the student as the logit of its win rate on every prompt (not the noisy 0/1 labels).
The student is what the runtime scores in microseconds: the static embedding of a prompt (a
table lookup and a mean), its length, and a one-hidden-layer MLP (``runtime/scoring/heads.py``).

A checkpoint of a distilled router is a folder with ``static_embeddings.npy``, ``tokenizer.json``,
``head.npy``, ``head_out.npy`` and ``training.json``; ``edgeroute export distilled`` turns it
into a bundle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from edgeroute.runtime.errors import InvalidInputError

from edgeroute.runtime.scoring.layout import HEAD_FILE, HEAD_OUT_FILE  # noqa: F401 - HEAD_FILE: the first layer

from edgeroute.export.training.features import fold_length, reference_win_rates, student_features  # noqa: F401 - re-exported
from edgeroute.export.training.student_loop import head_arrays, one_thread, run_epochs
from edgeroute.export.training.table_tuning import TokenRows, fit_tuned_student, frozen_static_router, tuned_features, tuning_inputs

_CLIP = 1e-6


@dataclass(frozen=True)
class StudentRecipe:
    """How the MLP head is fitted. The defaults are the frozen-table recipe the protocol chose (benchmarks/quality.py);
    the shipped fast tier tunes its table (``hidden=128, table_learning_rate=3e-4, epochs=10``, docs/training.md)."""

    # 64 ties 256 on the protocol (benchmarks/results/quality.md) at a quarter of the head's scoring time.
    hidden: int = 64
    # Weight of the prompt's standardized log length beside the standardized student score (``fold_length``),
    # for teachers that under-use length (the shipped probe teacher has its own length term: weight 0).
    length_weight: float = 0.0
    # Weight of the generated chat prompts' template labels in their targets (``with_chat_prior``; 0: the teacher alone).
    chat_prior: float = 0.0
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    # Learning rate of the static table's rows, fitted with the head (``table_tuning``); 0 keeps the table frozen.
    table_learning_rate: float = 0.0
    seed: int = 0


def teacher_targets(win_rates: np.ndarray) -> np.ndarray:
    """The student's regression target: the logit of the teacher's win rate."""
    p = np.clip(np.asarray(win_rates, dtype=np.float64), _CLIP, 1.0 - _CLIP)
    return np.log(p / (1.0 - p))


@dataclass(frozen=True)
class ChatPrior:
    """The generated chat prompts' template labels (hard or easy), blended into the teacher's targets.

    ``rows``: mask of the rows that hold generated chat prompts; ``hard``: per row, whether its template
    was a hard one; ``weight``: 0 keeps the teacher's logits, 1 replaces them with the template label;
    ``categories``: per row, its chat category ("" off the chat rows), which the gap-aware label rule reads;
    ``labelled``: the rows the template label's anchors come from (default: every row off ``rows``; unlabeled
    prompts of other sources are neither).
    """

    rows: np.ndarray
    hard: np.ndarray
    weight: float
    categories: np.ndarray | None = None
    labelled: np.ndarray | None = None

    def labelled_rows(self) -> np.ndarray:
        """The rows whose teacher logits place the template labels (their 10th and 90th percentiles)."""
        return ~self.rows if self.labelled is None else self.labelled


# The template label's place on the teacher's scale: its logit percentiles over the labelled training rows.
PRIOR_PERCENTILES = (10.0, 90.0)


def with_chat_prior(logits: np.ndarray, labelled: np.ndarray, prior: ChatPrior | None) -> np.ndarray:
    """Teacher logits with the chat prior blended in on the chat rows: (1 - w) x the teacher's logit + w x the
    teacher's 90th (hard template) or 10th (easy template) percentile over the ``labelled`` rows.

    The MMLU/GSM8K labels say nothing about how hard a chat request is to write, role-play or code, and a
    teacher trained on them ranks such prompts almost at random; the templates' difficulty is what tells.
    """
    if prior is None or prior.weight == 0.0:
        return logits
    low, high = np.percentile(logits[labelled & np.isfinite(logits)], PRIOR_PERCENTILES)
    anchor = np.where(prior.hard, high, low)
    blended = (1.0 - prior.weight) * logits + prior.weight * anchor
    return np.where(prior.rows, blended, logits)


def fit_distilled(
    features: np.ndarray,
    teacher_win_rates: np.ndarray,
    recipe: StudentRecipe,
    progress: bool = False,
    prior: ChatPrior | None = None,
    tokens: TokenRows | None = None,
    table: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """The fast tier's recipe: a student fitted to the teacher's logits (the chat prior blended in on its rows),
    then length folded in (``fold_length``). Returns (the tuned table, or None where it stays frozen; head; head_out).

    With ``recipe.table_learning_rate`` > 0 the static ``table``'s rows are fitted with the head from each
    prompt's ``tokens``, and the length fold reads the tuned table's embeddings.
    """
    labelled = np.ones(len(teacher_win_rates), dtype=bool) if prior is None else prior.labelled_rows()
    logits = with_chat_prior(teacher_targets(teacher_win_rates), labelled, prior)
    if recipe.table_learning_rate == 0.0:
        return None, *fold_length(*fit_student(features, logits, recipe, progress), features, logits, recipe.length_weight)
    tokens, table = tuning_inputs(tokens, table)
    tuned, hidden, output = fit_tuned_student(tokens, features[:, -1], logits, table, recipe, progress)
    return tuned, *fold_length(hidden, output, tuned_features(tuned, tokens, features), logits, recipe.length_weight)


def fit_student(
    features: np.ndarray, targets: np.ndarray, recipe: StudentRecipe = StudentRecipe(), progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Fit the MLP head by mean squared error on ``targets``; returns (``head.npy``, ``head_out.npy``) arrays."""
    with one_thread():
        torch.manual_seed(recipe.seed)
        net = torch.nn.Sequential(torch.nn.Linear(features.shape[1], recipe.hidden), torch.nn.ReLU(), torch.nn.Linear(recipe.hidden, 1))
        optimizer = torch.optim.AdamW(net.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
        inputs, outputs = torch.from_numpy(features), torch.as_tensor(targets, dtype=torch.float32)

        def loss_of(rows: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.mse_loss(net(inputs[rows]).squeeze(-1), outputs[rows])

        run_epochs(loss_of, len(inputs), [optimizer], recipe.epochs, recipe.batch_size, recipe.seed, "fit student", progress)
        return head_arrays(net[0], net[2])


def save_student(out: Path, hidden: np.ndarray, output: np.ndarray, report: dict[str, Any]) -> Path:
    """Write the head arrays and ``training.json`` into a checkpoint folder that holds the static table."""
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / HEAD_FILE, hidden, allow_pickle=False)
    np.save(out / HEAD_OUT_FILE, output, allow_pickle=False)
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return out


def student_report(recipe: StudentRecipe, teacher: str, n_prompts: int) -> dict[str, Any]:
    """The ``training.json`` of a distilled router (copied into the bundle's manifest at export)."""
    return {
        "recipe": {
            **asdict(recipe),
            "kind": "distilled static MLP",
            "teacher": teacher,
            "loss": "MSE on the teacher's win-rate logit (chat prompts: blended with their template's label by chat_prior); "
            "then + length_weight x standardized log length outside the MLP",
            "features": "static embedding, log1p(chars)/8",
            "table": "frozen" if recipe.table_learning_rate == 0.0 else "rows tuned with the head (table_learning_rate)",
        },
        "n_train": n_prompts,
        "n_val": 0,
        "best": None,
    }


def _extra_prompts(path: str | None) -> list[str]:
    """Unlabeled prompts from a file (``.txt``, ``.jsonl``, ``.csv``, ``.parquet``: ``read_prompts``) that the teacher scores too."""
    from edgeroute.runtime.evaluation.report import read_prompts

    return read_prompts([Path(path)]) if path else []


def distill_command(args: Any) -> dict[str, Any]:
    """``edgeroute train distilled``: fit the fast tier to a teacher bundle's win rates on a prompt set."""
    import shutil

    from edgeroute.runtime import Router
    from edgeroute.runtime.evaluation.data import load_protocol_data

    from edgeroute.export.training.features import static_features
    from edgeroute.export.static import STATIC_TABLE_FILE, STATIC_TOKENIZER_FILE

    from edgeroute.export.training.chat_prompts import labelled_chat_prompts
    from edgeroute.runtime.evaluation.data import prompt_sketch

    n_chat = getattr(args, "chat_prompts", 0)
    recipe = _checked_recipe(args, n_chat)  # before the minutes of teacher scoring
    data = load_protocol_data(Path(args.data))
    chat, hard = labelled_chat_prompts(n_chat, seed=args.seed) if n_chat else ([], [])
    extra = _extra_prompts(getattr(args, "extra_prompts", None))
    prompts = data.prompts + chat + extra
    source = np.repeat([0, 1, 2], [len(data.prompts), len(chat), len(extra)])  # labelled, generated chat, written
    hard_rows = np.zeros(len(prompts), dtype=bool)
    hard_rows[source == 1] = np.asarray(hard, dtype=bool)
    prior = ChatPrior(source == 1, hard_rows, recipe.chat_prior, labelled=source == 0)
    # A table already tuned to a teacher would be tuned twice, on rows fitted to the same prompts.
    static = frozen_static_router(args.static_from) if recipe.table_learning_rate else Router.load(args.static_from)
    table = _static_table(static)  # checked before the minutes of teacher scoring
    teacher = Router.load(args.teacher)
    rates = np.concatenate(
        [teacher.strong_win_rates(prompts[i : i + 256]) for i in tqdm(range(0, len(prompts), 256), desc="teacher win rates", unit="batch")]
    )
    tokens = TokenRows.of(static, prompts) if recipe.table_learning_rate else None
    tuned, hidden, output = fit_distilled(
        static_features(static, prompts), rates, recipe, progress=True, prior=prior, tokens=tokens, table=table
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / STATIC_TABLE_FILE, table if tuned is None else tuned, allow_pickle=False)
    shutil.copyfile(static.manifest.verify(static.manifest.tokenizer.file), out / STATIC_TOKENIZER_FILE)
    report = student_report(recipe, teacher.name, len(prompts))
    report["prompts"] = {"labelled": len(data.prompts), "generated_chat": n_chat, "generator": "export/training/chat_prompts.py"}
    if extra:
        report["prompts"]["written"] = {"count": len(extra), "file": Path(args.extra_prompts).name}
    report["prompt_sketch"] = prompt_sketch(prompts)
    report["models"] = {"strong": teacher.strong_model or data.strong_model, "weak": teacher.weak_model or data.weak_model}
    report["static_from"] = static.name
    # The table's own provenance travels on, so a bundle re-distilled from itself still says what its table is.
    source_model = json.loads(static.manifest.path.read_text(encoding="utf-8"))["embedder"].get("model")
    report["static_model"] = source_model if tuned is None else f"{source_model}; rows tuned with the head to {teacher.name}"
    save_student(out, hidden, output, report)
    return report


def _checked_recipe(args: Any, n_chat: int) -> StudentRecipe:
    """``train distilled``'s recipe from its options, refused before any work if an option is out of range."""
    if not 0.0 <= getattr(args, "chat_prior", 0.0) <= 1.0:
        raise InvalidInputError(f"--chat-prior must be in [0, 1], got {args.chat_prior}")
    if getattr(args, "tune_table", 0.0) < 0.0:
        raise InvalidInputError(f"--tune-table must be 0 (a frozen table) or a positive learning rate, got {args.tune_table}")
    return StudentRecipe(
        seed=args.seed,
        length_weight=getattr(args, "length_weight", 0.0),
        hidden=getattr(args, "hidden", StudentRecipe.hidden),
        chat_prior=getattr(args, "chat_prior", 0.0) if n_chat else 0.0,
        table_learning_rate=getattr(args, "tune_table", 0.0),
        epochs=getattr(args, "epochs", None) or StudentRecipe.epochs,
    )


def _static_table(router: Any) -> np.ndarray:
    from edgeroute.export.checkpoints import CheckpointError

    from edgeroute.runtime.scoring.manifest import StaticEmbedderSpec

    spec = router.manifest.encoder
    if not isinstance(spec, StaticEmbedderSpec):
        raise CheckpointError(f"{router.manifest.folder}: --static-from needs a router with a static embedder")
    return np.load(router.manifest.verify(spec.file), allow_pickle=False)
