"""``edgeroute train bert|mf``: train routers and write RouteLLM-format checkpoints.

The checkpoints are what ``edgeroute export`` converts: a BertForSequenceClassification folder
(3 labels: strong wins, tie, weak wins) or an MF folder (config.json, model.safetensors,
model_ids.json).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from edgeroute.runtime.errors import InvalidInputError
from edgeroute.runtime.evaluation.curves import routing_curve, summarize

from edgeroute.export.checkpoints import MODEL_IDS_FILE
from edgeroute.export.onnx_graphs import SentenceEmbedding
from edgeroute.export.training.data import LABEL_STRONG_WINS, LABEL_WEAK_WINS, Battles

TRAINING_REPORT = "training.json"


@dataclass
class TrainReport:
    """What a training run did, written beside the checkpoint as training.json."""

    kind: str
    recipe: dict[str, Any]
    n_train: int
    n_val: int
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        (folder / TRAINING_REPORT).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


def seed_everything(seed: int) -> None:
    """Fix Python, numpy and torch seeds so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def validation_apgr(win_rates: np.ndarray, labels: np.ndarray) -> float:
    """APGR of win rates on labelled battles (quality 1 for the winner; ties change nothing)."""
    strong_quality = (labels == LABEL_STRONG_WINS).astype(np.float64)
    weak_quality = (labels == LABEL_WEAK_WINS).astype(np.float64)
    if strong_quality.mean() == weak_quality.mean():
        return float("nan")
    curve = routing_curve(win_rates, strong_quality, weak_quality)
    return summarize(curve, strong_quality.mean(), weak_quality.mean())["apgr"]


def _keep_if_best(report: TrainReport, model: torch.nn.Module, best_state: dict[str, torch.Tensor]) -> None:
    """Make the newest history entry the best, and copy the weights, when its validation APGR beats the best so far."""
    apgr = report.history[-1]["val_apgr"]
    if not report.best or (apgr == apgr and apgr > report.best["val_apgr"]):
        report.best = dict(report.history[-1])
        best_state.update({k: v.detach().clone() for k, v in model.state_dict().items()})


def _encoder_name(encoder: str | Path | None) -> str:
    """The encoder as training.json records it: its folder's name, never a path of this machine (manifests copy it)."""
    return "minilm" if encoder in (None, "minilm") else Path(encoder).name


def _encoder_dir(encoder: str | Path | None) -> Path:
    from edgeroute.export.encoders import minilm_dir

    return minilm_dir() if encoder in (None, "minilm") else Path(encoder)


# ---------------------------------------------------------------------------- BERT
def train_bert(
    battles: Battles,
    out: Path,
    strong_model: str,
    weak_model: str,
    encoder: str | Path | None = None,
    epochs: float = 2.0,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    max_length: int = 256,
    seed: int = 0,
    evals_per_epoch: int = 2,
) -> TrainReport:
    """Fine-tune a BERT-family encoder as RouteLLM's 3-label router; keep the best validation APGR."""
    from transformers import AutoTokenizer

    from edgeroute.export.training.finetune import FineTuneRecipe, TokenizedPrompts, finetuned_win_rates, train_finetuned

    seed_everything(seed)
    indices, labels = battles.pair_labels(strong_model, weak_model)
    if len(indices) == 0:
        raise InvalidInputError(f"no battles between {strong_model!r} and {weak_model!r} in the training data")
    split = battles.split[indices]
    train_rows, val_rows = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    encoder_dir = _encoder_dir(encoder)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir), local_files_only=True)
    tokens = TokenizedPrompts(tokenizer, [battles.prompts[i] for i in indices], max_length)
    recipe = FineTuneRecipe(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, max_length=max_length, seed=seed)
    report = TrainReport("bert", _bert_recipe_facts(recipe, encoder, strong_model, weak_model), len(train_rows), len(val_rows))
    steps_per_epoch = math.ceil(len(train_rows) / batch_size)
    eval_every = max(1, steps_per_epoch // max(1, evals_per_epoch))
    best_state: dict[str, torch.Tensor] = {}
    val_tokens = tokens.subset(val_rows)

    def evaluate(step: int, total: int, loss: float, model: Any) -> None:
        if step % eval_every and step != total:
            return
        model.eval()
        apgr = validation_apgr(finetuned_win_rates(model, val_tokens), labels[val_rows]) if len(val_rows) else float("nan")
        model.train()
        report.history.append({"step": step, "epoch": step / steps_per_epoch, "val_apgr": apgr, "loss": loss})
        tqdm.write(f"step {step}: validation APGR {apgr:.4f}")
        _keep_if_best(report, model, best_state)

    model = train_finetuned(encoder_dir, tokens, labels, train_rows, recipe, "train bert", evaluate)
    if best_state:
        model.load_state_dict(best_state)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(str(out))
    report.save(out)
    return report


def _bert_recipe_facts(recipe: Any, encoder: str | Path | None, strong_model: str, weak_model: str) -> dict[str, Any]:
    """training.json's recipe of ``edgeroute train bert``."""
    return {
        "encoder": _encoder_name(encoder),
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "learning_rate": recipe.learning_rate,
        "max_length": recipe.max_length,
        "seed": recipe.seed,
        "strong_model": strong_model,
        "weak_model": weak_model,
        "loss": "cross-entropy over RouteLLM's 3 labels",
        "schedule": "AdamW, linear decay, 10% warm-up",
    }


# ------------------------------------------------------------------------------ MF
def embed_prompts(prompts: list[str], encoder: str | Path | None = None, max_length: int = 256, batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings (mean pooling, L2-normalized) of ``prompts``, as the exported embedder computes them."""
    from transformers import AutoModel, AutoTokenizer

    encoder_dir = _encoder_dir(encoder)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir), local_files_only=True)
    module = SentenceEmbedding(AutoModel.from_pretrained(str(encoder_dir), local_files_only=True)).eval()
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    embeddings = np.zeros((len(prompts), module.encoder.config.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), desc="embed prompts", unit="batch"):
            rows = order[start : start + batch_size]
            batch = tokenizer([prompts[r] for r in rows], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            embeddings[rows] = module(**dict(batch)).numpy()
    return embeddings


class _MFTrainer(torch.nn.Module):
    """RouteLLM's MF training model over fixed prompt embeddings."""

    def __init__(self, num_models: int, dim: int, text_dim: int) -> None:
        super().__init__()
        self.P = torch.nn.Embedding(num_models, dim)
        self.text_proj = torch.nn.Linear(text_dim, dim, bias=False)
        self.classifier = torch.nn.Linear(dim, 1, bias=False)

    def forward(self, winner: torch.Tensor, loser: torch.Tensor, prompt: torch.Tensor, noise: float) -> torch.Tensor:
        win = torch.nn.functional.normalize(self.P(winner), p=2, dim=1)
        lose = torch.nn.functional.normalize(self.P(loser), p=2, dim=1)
        if noise:
            prompt = prompt + torch.randn_like(prompt) * noise  # RouteLLM's noise for stable training
        return self.classifier((win - lose) * self.text_proj(prompt)).squeeze(-1)


def train_mf(
    battles: Battles,
    out: Path,
    strong_model: str,
    weak_model: str,
    encoder: str | Path | None = None,
    dim: int = 128,
    epochs: int = 100,
    batch_size: int = 64,
    learning_rate: float = 3e-4,
    weight_decay: float = 1e-5,
    noise: float = 0.1,
    max_length: int = 256,
    seed: int = 0,
    embeddings: np.ndarray | None = None,
) -> TrainReport:
    """RouteLLM's matrix-factorization objective over every model in the battles (ties dropped).

    Validation APGR (on the strong/weak pair's battles of the validation split) picks the epoch.
    """
    seed_everything(seed)
    names = sorted(set(battles.model_a) | set(battles.model_b))
    for name in (strong_model, weak_model):
        if name not in names:
            raise InvalidInputError(f"model {name!r} does not appear in the training battles")
    if embeddings is None:
        embeddings = embed_prompts(battles.prompts, encoder, max_length)
    index = {name: i for i, name in enumerate(names)}
    decisive = [i for i, w in enumerate(battles.winner) if w in ("model_a", "model_b") and battles.model_a[i] != battles.model_b[i]]
    train = [i for i in decisive if battles.split[i] == "train"]
    winners = torch.tensor([index[battles.model_a[i] if battles.winner[i] == "model_a" else battles.model_b[i]] for i in train])
    losers = torch.tensor([index[battles.model_b[i] if battles.winner[i] == "model_a" else battles.model_a[i]] for i in train])
    prompts = torch.from_numpy(embeddings[train])
    val_indices, val_labels = battles.pair_labels(strong_model, weak_model)
    val_keep = battles.split[val_indices] == "val"
    val_embeddings, val_labels = torch.from_numpy(embeddings[val_indices[val_keep]]), val_labels[val_keep]

    model = _MFTrainer(len(names), dim, embeddings.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    settings = {"dim": dim, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "weight_decay": weight_decay}
    recipe = {
        "encoder": _encoder_name(encoder),
        **settings,
        "noise": noise,
        "seed": seed,
        "max_length": max_length,
        "models": names,
        "loss": "BCE on decisive battles (RouteLLM MF)",
    }
    report = TrainReport("mf", recipe, len(train), len(val_labels))
    best_state: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(seed)
    strong_row, weak_row = torch.tensor([index[strong_model]]), torch.tensor([index[weak_model]])
    for epoch in tqdm(range(1, epochs + 1), desc="train mf", unit="epoch"):
        permutation = torch.randperm(len(train), generator=generator)
        train_loss = _mf_epoch(model, optimizer, (winners, losers, prompts), permutation, batch_size, noise)
        model.eval()
        with torch.no_grad():
            logits = model(strong_row.expand(len(val_embeddings)), weak_row.expand(len(val_embeddings)), val_embeddings, 0.0)
        apgr = validation_apgr(torch.sigmoid(logits).numpy(), val_labels) if len(val_labels) else float("nan")
        report.history.append({"epoch": epoch, "train_loss": train_loss, "val_apgr": apgr})
        _keep_if_best(report, model, best_state)
    if best_state:
        model.load_state_dict(best_state)
    _save_mf_checkpoint(out, model, index, dim, int(embeddings.shape[1]))
    report.save(out)
    return report


def _mf_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    battles: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    permutation: torch.Tensor,
    batch_size: int,
    noise: float,
) -> float:
    """One pass over the decisive battles (winner, loser, prompt embedding) in ``permutation``'s order; the mean loss."""
    winners, losers, prompts = battles
    model.train()
    total = 0.0
    for start in range(0, len(permutation), batch_size):
        rows = permutation[start : start + batch_size]
        logits = model(winners[rows], losers[rows], prompts[rows], noise)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(rows)
    return total / max(1, len(permutation))


def _save_mf_checkpoint(out: Path, model: torch.nn.Module, index: dict[str, int], dim: int, text_dim: int) -> None:
    """RouteLLM's MF checkpoint layout: model.safetensors, config.json and the model ids."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    weights = {
        "P.weight": state["P.weight"],
        "text_proj.0.weight": state["text_proj.weight"],
        "classifier.0.weight": state["classifier.weight"],
    }
    save_file({name: tensor.contiguous() for name, tensor in weights.items()}, str(out / "model.safetensors"))
    config = {"dim": dim, "num_models": len(index), "text_dim": text_dim, "num_classes": 1, "use_proj": True}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / MODEL_IDS_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def run_train_command(args: Any) -> TrainReport:
    """Run ``edgeroute train`` from parsed CLI arguments."""
    from edgeroute.export.training.data import load_battles

    if args.threads:
        torch.set_num_threads(args.threads)
    battles = load_battles(Path(args.data), args.strong_model, args.weak_model)
    strong, weak = _pair_names(battles, args.strong_model, args.weak_model)
    common = dict(
        encoder=args.encoder,
        max_length=args.max_length,
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
    )
    if args.kind == "bert":
        return train_bert(battles, Path(args.out), strong, weak, **common)
    embeddings = None
    if args.encoder == "static":
        # The microsecond tier: distill MiniLM into a static table kept with the checkpoint.
        from edgeroute.export.static import save_static, static_embedder

        save_static(_encoder_dir(None), Path(args.out), dims=args.static_dims)
        embed = static_embedder(Path(args.out), args.max_length)
        embeddings = np.concatenate([embed(battles.prompts[i : i + 256]) for i in range(0, len(battles), 256)])
    return train_mf(battles, Path(args.out), strong, weak, dim=args.dim, noise=args.noise, embeddings=embeddings, **common)


def _pair_names(battles: Battles, strong_model: str, weak_model: str) -> tuple[str, str]:
    """The battles' own spelling of the two models (tables may prefix an organization)."""
    from edgeroute.runtime.evaluation.data import match_model

    names = set(battles.model_a) | set(battles.model_b)
    return match_model(strong_model, names, Path("training data")), match_model(weak_model, names, Path("training data"))
