"""Tiny RouteLLM-format checkpoints built on the fly (random weights, the real MiniLM tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

TINY_HIDDEN = 32


def _tiny_config(**extra):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=TINY_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **extra,
    )


def _save_tokenizer(folder: Path) -> None:
    from transformers import AutoTokenizer

    from edgeroute.export import minilm_dir

    AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True).save_pretrained(str(folder))


def make_bert_checkpoint(folder: Path, seed: int = 0) -> Path:
    """RouteLLM's bert_gpt4_augmented layout: BertForSequenceClassification, 3 labels, tokenizer."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(_tiny_config(num_labels=3))
    with torch.no_grad():  # spread the logits so win rates vary across prompts
        model.classifier.weight.mul_(40.0)
    model.save_pretrained(str(folder))
    _save_tokenizer(folder)
    return folder


def make_encoder(folder: Path, seed: int = 1) -> Path:
    """A tiny BERT sentence encoder folder (hidden size 32) to embed prompts for MF tests."""
    import torch
    from transformers import BertModel

    torch.manual_seed(seed)
    BertModel(_tiny_config()).save_pretrained(str(folder))
    _save_tokenizer(folder)
    return folder


def make_mf_checkpoint(
    folder: Path,
    text_dim: int = TINY_HIDDEN,
    num_models: int = 64,
    dim: int = 16,
    seed: int = 2,
    use_proj: bool = True,
    torch_format: bool = False,
) -> Path:
    """RouteLLM's mf_gpt4_augmented layout: config.json and P / text_proj / classifier weights."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"dim": dim, "num_models": num_models, "text_dim": text_dim, "num_classes": 1, "use_proj": use_proj}
    (folder / "config.json").write_text(json.dumps(config))
    weights = {
        "P.weight": torch.randn(num_models, dim, generator=generator),
        "classifier.0.weight": torch.randn(1, dim, generator=generator) * 3,
    }
    if use_proj:
        weights["text_proj.0.weight"] = torch.randn(dim, text_dim, generator=generator)
    if torch_format:
        torch.save(weights, folder / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(weights, str(folder / "model.safetensors"))
    return folder
