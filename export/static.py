"""Distill a sentence encoder into static token embeddings (model2vec's recipe, in a few lines).

Every vocabulary token is encoded alone (``[CLS] token [SEP]``) and mean-pooled, the table is
reduced by PCA, and each row is weighted by how informative the token is (SIF weighting from a
Zipf estimate of its frequency, using the vocabulary's order). At scoring time a prompt's
embedding is then the normalized mean of its tokens' rows: a table lookup, no network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from edgeroute.runtime.scoring.layout import STATIC_TABLE_FILE, TOKENIZER_FILE as STATIC_TOKENIZER_FILE  # noqa: F401 - re-exported


def distill_static(encoder_dir: Path, dims: int = 256, batch_size: int = 512, sif: float = 1e-3) -> np.ndarray:
    """Return a float32 [vocab, dims] table of static token embeddings."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(encoder_dir), local_files_only=True).eval()
    vocab = len(tokenizer)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    rows = np.zeros((vocab, model.config.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for start in tqdm(range(0, vocab, batch_size), desc="distill static embeddings", unit="batch"):
            ids = torch.arange(start, min(start + batch_size, vocab))
            batch = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], dim=1)
            hidden = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
            rows[start : start + len(ids)] = hidden.mean(dim=1).numpy()
    centered = rows - rows.mean(axis=0, keepdims=True)
    _, _, components = np.linalg.svd(centered[:: max(1, vocab // 20000)], full_matrices=False)
    reduced = centered @ components[:dims].T
    # Zipf: probability proportional to 1 / rank; SIF down-weights frequent tokens.
    rank = np.arange(1, vocab + 1, dtype=np.float64)
    probability = (1.0 / rank) / (1.0 / rank).sum()
    weights = sif / (sif + probability)
    return (reduced * weights[:, None]).astype(np.float32)


def save_static(encoder_dir: Path, out: Path, dims: int = 256) -> Path:
    """Distill and save the table and the tokenizer into ``out`` (a checkpoint folder)."""
    from transformers import AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    np.save(out / STATIC_TABLE_FILE, distill_static(encoder_dir, dims), allow_pickle=False)
    AutoTokenizer.from_pretrained(str(encoder_dir), local_files_only=True).backend_tokenizer.save(str(out / STATIC_TOKENIZER_FILE))
    return out / STATIC_TABLE_FILE


def static_embedder(folder: Path, max_length: int = 512):
    """The runtime's static embedder over a folder holding the table and tokenizer."""
    from edgeroute.runtime.scoring.encoders import StaticEmbedder, load_tokenizer

    table = np.load(folder / STATIC_TABLE_FILE, allow_pickle=False)
    return StaticEmbedder(table, load_tokenizer(folder / STATIC_TOKENIZER_FILE, max_length))
