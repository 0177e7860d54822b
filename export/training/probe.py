"""The transformer tier's recipe: a linear probe on a frozen, truncated sentence encoder.

all-MiniLM-L6-v2 keeps its bottom ``layers`` layers (4 of 6) unchanged; a prompt's embedding is
the masked mean of their output, L2-normalized (``SentenceEmbedding``). A ridge regression on the
standardized embedding predicts ``strong correct - weak correct`` (-1, 0 or 1); prompt length is
then added as one linear term (``fold_length``) and the score is calibrated by Platt scaling to
P(strong model wins). Nothing of the encoder is fine-tuned: on RouteLLM's data a classifier with
its top 2 layers fine-tuned routed near random on subjects it never saw (likely it fitted the
training subjects), while a strongly regularized linear map over frozen features generalized
(benchmarks/results/quality.md).

The head is stored in the runtime's MLP layout (``runtime/scoring/heads.py``): a linear score
``s`` is two ReLU units, ``relu(s) - relu(-s) = s``, exactly; the length term is a third unit.
A checkpoint is a folder with ``encoder/`` (the truncated Hugging Face model and tokenizer),
``head.npy``, ``head_out.npy`` and ``training.json``; ``edgeroute export probe`` makes it a bundle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from edgeroute.runtime.scoring.heads import MLPHead, length_feature

from edgeroute.export.encoders import ENCODER_FOLDER
from edgeroute.export.onnx_graphs import SentenceEmbedding
from edgeroute.export.training.features import as_scored, fold_length  # noqa: F401 - as_scored re-exported
from edgeroute.runtime.scoring.layout import HEAD_FILE, HEAD_OUT_FILE


@dataclass(frozen=True)
class ProbeRecipe:
    """Settings of the transformer tier (see benchmarks/quality.py for the protocol that chose them)."""

    # Fixed before the protocol ran (the bottom 4 layers and 128 tokens of the earlier fine-tuning recipe,
    # whose frozen prefix this is); the protocol chose ridge and length_weight from a grid.
    layers: int = 4
    max_length: int = 128
    # Ridge penalty per training row, on standardized features: heavy, because subjects unseen in
    # training are what the router meets in use.
    ridge: float = 3.0
    length_weight: float = 1.0
    batch_size: int = 64


def truncated_encoder(encoder_dir: Path, layers: int) -> tuple[Any, Any]:
    """Tokenizer and the encoder's bottom ``layers`` layers (eager attention, for ONNX export)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir), local_files_only=True, use_fast=True)
    model = AutoModel.from_pretrained(str(encoder_dir), local_files_only=True, attn_implementation="eager")
    if not 1 <= layers <= model.config.num_hidden_layers:
        raise ValueError(f"layers must be 1..{model.config.num_hidden_layers}, got {layers}")
    model.encoder.layer = model.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    return tokenizer, model.eval()


def encoder_embeddings(
    tokenizer: Any, model: Any, prompts: list[str], max_length: int, batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """``SentenceEmbedding`` of every prompt, batched by length (padding does not change the result)."""
    module = SentenceEmbedding(model).eval()
    order = np.argsort([len(p) for p in prompts], kind="stable")
    out = np.zeros((len(prompts), model.config.hidden_size), dtype=np.float32)
    starts = range(0, len(prompts), batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc="embed prompts", unit="batch", disable=not progress):
            rows = order[start : start + batch_size]
            batch = tokenizer([prompts[i] for i in rows], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            out[rows] = module(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}).numpy()
    return out


def fit_ridge(features: np.ndarray, target: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """Ridge regression on standardized features, returned as raw-feature weights and a bias."""
    x = np.asarray(features, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    standard = (x - mean) / scale
    gram = standard.T @ standard + ridge * len(x) * np.eye(x.shape[1])
    center = float(np.mean(target))
    weights = np.linalg.solve(gram, standard.T @ (target - center)) / scale
    return weights, center - float(mean @ weights)


def platt(scores: np.ndarray, positive: np.ndarray, steps: int = 50) -> tuple[float, float]:
    """(a, b) such that sigmoid(a * score + b) fits P(positive) by maximum likelihood (Newton's method).

    Platt's smoothed targets ((N+ + 1) / (N+ + 2) and 1 / (N- + 2)) keep the fit finite on separable data.
    """
    x = np.stack([np.asarray(scores, dtype=np.float64), np.ones(len(scores))], axis=1)
    hits = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(hits.sum()), int((~hits).sum())
    y = np.where(hits, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    params = np.zeros(2)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ params)))
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        params -= np.linalg.solve(hessian, x.T @ (p - y))
    return float(params[0]), float(params[1])


def linear_head(weights: np.ndarray, bias: float) -> tuple[np.ndarray, np.ndarray]:
    """The linear score ``weights · embedding + bias`` in the MLP layout: relu(s) - relu(-s)."""
    row = np.concatenate([weights, [0.0, bias]])
    hidden = np.stack([row, -row])
    return hidden.astype(np.float32), np.array([[1.0, -1.0, 0.0]], dtype=np.float32)


def fit_probe(
    embeddings: np.ndarray, prompts: list[str], strong_quality: np.ndarray, weak_quality: np.ndarray, recipe: ProbeRecipe
) -> tuple[np.ndarray, np.ndarray]:
    """The head of the transformer tier (``head.npy``, ``head_out.npy``) fitted on these rows."""
    target = np.asarray(strong_quality, dtype=np.float64) - np.asarray(weak_quality, dtype=np.float64)
    hidden, output = linear_head(*fit_ridge(embeddings, target, recipe.ridge))
    features = np.concatenate([embeddings, length_feature(prompts)[:, None]], axis=1).astype(np.float32)
    # fold_length keeps the scale of the score it is given; Platt scaling then sets the final one.
    score = MLPHead(hidden, output).feature_logits(embeddings, features[:, -1])
    hidden, output = fold_length(hidden, output, features, score, recipe.length_weight)
    folded = MLPHead(hidden, output).feature_logits(embeddings, features[:, -1])
    a, b = platt(folded, target > 0)
    output = output.astype(np.float64) * a
    output[0, -1] += b
    return hidden, output.astype(np.float32)


def probe_command(args: Any) -> dict[str, Any]:
    """``edgeroute train probe``: the transformer tier on every row of a data folder; writes a checkpoint."""
    from edgeroute.runtime.evaluation.data import load_protocol_data

    from edgeroute.export.encoders import minilm_dir

    recipe = ProbeRecipe(layers=args.layers)
    data = load_protocol_data(Path(args.data))
    tokenizer, model = truncated_encoder(Path(args.encoder) if args.encoder else minilm_dir(), recipe.layers)
    embeddings = encoder_embeddings(tokenizer, model, data.prompts, recipe.max_length, recipe.batch_size, progress=True)
    hidden, output = fit_probe(embeddings, as_scored(data.prompts, recipe.max_length), data.strong_quality, data.weak_quality, recipe)
    out = Path(args.out)
    (out / ENCODER_FOLDER).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out / ENCODER_FOLDER))
    tokenizer.save_pretrained(str(out / ENCODER_FOLDER))
    np.save(out / HEAD_FILE, hidden, allow_pickle=False)
    np.save(out / HEAD_OUT_FILE, output, allow_pickle=False)
    report = {
        "recipe": {
            **asdict(recipe),
            "kind": "linear probe on a frozen truncated encoder",
            "encoder": "sentence-transformers/all-MiniLM-L6-v2" if not args.encoder else Path(args.encoder).name,
            "target": "strong correct - weak correct, ridge on standardized features; "
            "+ length_weight x standardized log length; Platt-scaled to P(strong wins)",
        },
        "n_train": len(data),
        "n_val": 0,
        "best": None,
        "models": {"strong": data.strong_model, "weak": data.weak_model},
    }
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def reference_win_rates(checkpoint: Path, prompts: list[str]) -> np.ndarray:
    """The probe's win rates from the checkpoint in PyTorch + float64, one prompt at a time (export parity)."""
    from edgeroute.export.training import features

    recipe = json.loads((checkpoint / "training.json").read_text(encoding="utf-8"))["recipe"]
    tokenizer, model = truncated_encoder(checkpoint / ENCODER_FOLDER, int(recipe["layers"]))

    def embed(batch: list[str]) -> np.ndarray:
        return np.concatenate([encoder_embeddings(tokenizer, model, [p], int(recipe["max_length"])) for p in batch])

    return features.reference_win_rates(checkpoint, as_scored(prompts, int(recipe["max_length"])), embed)
