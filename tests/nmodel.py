"""A synthetic N-model MF bundle built without torch: the shipped static token table and tokenizer,
and a folded MF head whose rows the test chooses, so that every model's score is known exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from edgeroute.runtime.scoring.layout import HEAD_FILE, STATIC_TABLE_FILE, TOKENIZER_FILE
from edgeroute.runtime.scoring.manifest import write_manifest
from edgeroute.runtime.scoring.router import resolve_bundle

NAMES = ("large-llm", "medium-llm", "small-llm")


def make_n_model_bundle(folder: Path, rows: np.ndarray, names: tuple[str, ...] = NAMES) -> Path:
    """A bundle of kind ``mf`` with a folded head of ``rows`` ([models, 256]) over the shipped static embedder."""
    source = resolve_bundle("static-distilled-gpt4-mixtral")
    shipped = json.loads((source / "manifest.json").read_text())
    folder.mkdir(parents=True)
    for name in (STATIC_TABLE_FILE, TOKENIZER_FILE):
        shutil.copyfile(source / name, folder / name)
    np.save(folder / HEAD_FILE, rows.astype(np.float32), allow_pickle=False)
    manifest = {
        "schema_version": 1,
        "name": folder.name,
        "kind": "mf",
        "tokenizer": shipped["tokenizer"],
        "embedder": {"kind": "static", "file": STATIC_TABLE_FILE, "dim": rows.shape[1]},
        "head": {
            "file": HEAD_FILE,
            "model_names": list(names),
            "default_strong": names[0],
            "default_weak": names[-1],
            "win_rate": {"kind": "sigmoid_difference"},
        },
        "files": {name: {} for name in (STATIC_TABLE_FILE, TOKENIZER_FILE, HEAD_FILE)},
    }
    write_manifest(folder, manifest)
    return folder


def synthetic_rows(seed: int = 0, models: int = 3, dim: int = 256, scale: float = 6.0) -> np.ndarray:
    """Random head rows: each model's score is its row's dot product with the prompt's unit embedding."""
    return np.random.default_rng(seed).normal(size=(models, dim)) * scale / np.sqrt(dim)
