"""``edgeroute train finetuned|probe|distilled|teacher``: the recipes compared by benchmarks/quality.py
(the fully fine-tuned BERT, the probe, the distilled fast tier, the earlier top-2-layer teacher), trained
on every row of a data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def train_final_teacher(data_dir: Path, out: Path, seed: int = 0) -> dict[str, Any]:
    """The previous transformer-tier recipe (``TeacherRecipe``) on all MMLU and GSM8K rows; writes a BERT checkpoint."""
    from edgeroute.runtime.evaluation.data import load_protocol_data

    from edgeroute.export.training.crossval import golden_labels
    from edgeroute.export.encoders import minilm_dir
    from edgeroute.export.training.teacher import FrozenPrefix, TeacherRecipe, save_teacher, train_teacher

    data = load_protocol_data(data_dir)
    recipe = TeacherRecipe(seed=seed)
    prefix = FrozenPrefix(minilm_dir(), data.prompts, recipe)
    model = train_teacher(minilm_dir(), prefix, golden_labels(data), np.arange(len(data)), recipe)
    save_teacher(model, prefix.tokenizer, out, recipe, len(data))
    return {"checkpoint": str(out), "n_train": len(data), "recipe": recipe.__dict__}


def train_final_finetuned(
    data_dir: Path,
    out: Path,
    recipe: Any,
    n_chat: int = 0,
    chat_rule: str = "gap-aware",
    written: bool = False,
    written_path: Path | None = None,
) -> dict[str, Any]:
    """The shipped transformer tier's recipe (``FineTuneRecipe``) on every MMLU and GSM8K row; writes a BERT checkpoint.

    ``n_chat`` generated chat-style prompts join the rows with their template's label (``template_labels``
    under ``chat_rule``), the only signal about chat prompts this project has without LLM answers;
    ``written`` adds the training half of the written prompts that carry an intended difficulty, labelled
    by the same rule (``written_labelled_rows``), from ``written_path`` if given.
    """
    from edgeroute.runtime.evaluation.data import benchmark_of, load_protocol_data

    from edgeroute.export.encoders import minilm_dir
    from edgeroute.export.training.crossval import golden_labels
    from edgeroute.export.training.finetune import (
        TokenizedPrompts,
        balance_sources,
        length_balanced_weights,
        template_labelled_rows,
        train_finetuned,
        written_labelled_rows,
        written_voice,
    )
    from edgeroute.export.training.teacher import load_classifier, save_teacher

    data = load_protocol_data(data_dir)
    chat, chat_labels = template_labelled_rows(n_chat, recipe.seed, chat_rule)
    own, own_labels = written_labelled_rows(chat_rule, written_path) if written else ([], np.zeros(0, dtype=np.int64))
    prompts = data.prompts + chat + own
    tokenizer, _ = load_classifier(minilm_dir())
    tokens = TokenizedPrompts(tokenizer, prompts, recipe.max_length)
    labels = np.concatenate([golden_labels(data), chat_labels, own_labels])
    chat_index, written_index = np.arange(len(data), len(data) + len(chat)), np.arange(len(data) + len(chat), len(prompts))
    benchmarks = np.concatenate([benchmark_of(data), np.full(len(chat) + len(own), "", dtype=object)])
    sources, voice = balance_sources(benchmarks, chat_index, written_index, written_voice(own))
    strata = voice if recipe.voice_balance else None
    weights = length_balanced_weights(prompts, labels, sources, strata=strata) if recipe.length_balance else None
    model = train_finetuned(minilm_dir(), tokens, labels, np.arange(len(prompts)), recipe, weights=weights)
    labelled_chat = chat_rule if n_chat or own else None
    save_teacher(model, tokenizer, out, recipe, len(data), data.prompts, n_chat, labelled_chat, written_chat=len(own))
    return {
        "checkpoint": str(out),
        "n_train": len(data),
        "generated_chat": n_chat,
        "written_chat": len(own),
        "chat_labels": chat_rule,
        "recipe": recipe.__dict__,
    }


def run_recipe_command(args: Any) -> dict[str, Any]:
    """Run ``edgeroute train teacher``, ``probe`` or ``distilled`` from parsed CLI arguments."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.kind == "teacher":
        return train_final_teacher(Path(args.data), Path(args.out), args.seed)
    if args.kind == "finetuned":
        from edgeroute.export.training.finetune import FineTuneRecipe

        options = ("epochs", "learning_rate", "max_length", "seed", "length_balance", "voice_balance")  # the CLI's names are the recipe's
        recipe = FineTuneRecipe(**{name: getattr(args, name) for name in options})
        written_path = Path(args.written_file) if args.written_file else None
        return train_final_finetuned(
            Path(args.data), Path(args.out), recipe, args.chat_prompts, args.chat_labels, args.written_labels, written_path
        )
    if args.kind == "probe":
        from edgeroute.export.training.probe import probe_command

        report = probe_command(args)
        return {"checkpoint": str(args.out), "n_train": report["n_train"], "recipe": report["recipe"]}
    from edgeroute.export.training.distill import distill_command

    report = distill_command(args)
    return {"checkpoint": str(args.out), "n_train": report["n_train"], "teacher": report["recipe"]["teacher"]}
