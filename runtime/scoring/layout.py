"""File names inside a bundle folder: the one place the exporter, the training recipes and the runtime read them from."""

from __future__ import annotations

MANIFEST_NAME = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
HEAD_FILE = "head.npy"  # an MF head's model embeddings, or an MLP head's first layer
HEAD_OUT_FILE = "head_out.npy"  # an MLP head's output layer
STATIC_TABLE_FILE = "static_embeddings.npy"  # a static embedder's token table


def graph_file(prefix: str, precision: str) -> str:
    """An ONNX graph's file name: ``{prefix}.{precision}.onnx`` (``model.int8.onnx``)."""
    return f"{prefix}.{precision}.onnx"
