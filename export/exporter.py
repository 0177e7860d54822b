"""``edgeroute export bert|mf``: RouteLLM-format checkpoints to verified ONNX router bundles."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from edgeroute.runtime import Router, __version__
from edgeroute.runtime.errors import EdgerouteError
from edgeroute.runtime.scoring.manifest import PRECISIONS, SCHEMA_VERSION, write_manifest
from edgeroute.runtime.scoring.names import alias_table

from edgeroute.export.encoders import ENCODER_FOLDER, minilm_dir  # noqa: F401 - re-exported
from edgeroute.export.checkpoints import ROUTELLM_DEFAULT_PAIR, CheckpointError, check_finite, read_mf_checkpoint, read_state_dict
from edgeroute.export.onnx_graphs import ClassifierLogits, SentenceEmbedding, export_graph, optimize_graph, quantize_graph, to_fp16
from edgeroute.export.parity import GOLDEN_INDICES, GOLDEN_PROMPTS, PARITY_PROMPTS, PARITY_THRESHOLDS, parity_figures
from edgeroute.runtime.scoring.layout import HEAD_FILE, HEAD_OUT_FILE, MANIFEST_NAME, TOKENIZER_FILE, graph_file

# Precision -> largest tolerated |win rate - PyTorch's| on the parity prompts.
_FIXED_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}
# Precision -> largest tolerated drift of a golden score between the exporting CPU and another.
# Same-kernel CPUs agree to ~1e-6; the u8s8 saturation this guards against moves scores by 0.05-0.5.
_GOLDEN_TOLERANCE = {"fp32": 1e-4, "int8": 2e-3, "fp16": 1e-2, "static": 1e-4}
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
    # Least decision agreement with PyTorch at the thresholds of 10%..90% strong calls (reference quantiles).
    # 0.97: a fine-tuned classifier's int8 graph is searched for the fp32 nodes that reach it (export/selective.py).
    int8_min_share_agreement: float = 0.97
    per_channel: bool = True
    # 7-bit weights: onnxruntime's u8s8 kernels cannot saturate, on AVX2 CPUs without VNNI too.
    reduce_range: bool = True
    overwrite: bool = False
    strong_name: str | None = None
    weak_name: str | None = None
    extra_manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise CheckpointError(f"precisions must be a non-empty subset of {PRECISIONS}, got {self.precisions}")


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
    """SHA-256 over the checkpoint's weight files, in name order: the folder's own, then a probe's ``encoder/``."""
    digest = hashlib.sha256()
    for sub in (folder, folder / ENCODER_FOLDER):
        for path in sorted(sub.iterdir()) if sub.is_dir() else ():
            if path.suffix in (".safetensors", ".bin", ".pt", ".npy") and path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


# Files of which a Hugging Face tokenizer needs at least one.
_TOKENIZER_FILES = (TOKENIZER_FILE, "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _load_hf(folder: Path, model_class: Any, optional: tuple[str, ...] = (), **model_kwargs: Any) -> tuple[Any, Any]:
    """Tokenizer and model of a checkpoint folder; typed errors for anything a checkpoint can get wrong.

    Weights the checkpoint lacks are refused (transformers would initialize them at random),
    except those whose names contain one of ``optional`` (e.g. an unused pooler).
    """
    from transformers import AutoTokenizer

    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise CheckpointError(
            f"{folder}: no tokenizer ({', '.join(_TOKENIZER_FILES)} are all missing); save the tokenizer "
            "next to the weights: AutoTokenizer.from_pretrained(BASE_MODEL).save_pretrained(CHECKPOINT)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, use_fast=True)
        # Eager attention traces into plain ops that onnxruntime's fusions recognize.
        model, info = model_class.from_pretrained(
            str(folder), local_files_only=True, attn_implementation="eager", output_loading_info=True, **model_kwargs
        )
    except RuntimeError as exc:  # size mismatches between the weights and config.json
        raise CheckpointError(
            f"{folder}: the weights do not fit config.json ({_first_line(exc)}); use the config.json that was saved with these weights"
        ) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{folder}: not a loadable Hugging Face checkpoint with its tokenizer ({_first_line(exc)})") from exc
    missing = sorted(k for k in info["missing_keys"] if "position_ids" not in k and not any(o in k for o in optional))
    if missing:
        raise CheckpointError(
            f"{folder}: the weights lack {', '.join(missing[:6])}{' …' if len(missing) > 6 else ''}; "
            "transformers would initialize them at random: export the trained checkpoint, not its base model"
        )
    check_finite({name: value.detach().float().numpy() for name, value in model.state_dict().items() if value.is_floating_point()}, folder)
    if not getattr(tokenizer, "is_fast", False):
        raise CheckpointError(f"{folder}: the tokenizer has no fast (tokenizers) version; add a tokenizer.json")
    return tokenizer, model.eval()


def _position_limit(model: Any) -> int:
    """Longest input the model's position embeddings allow (RoBERTa-style models reserve two)."""
    positions = int(model.config.max_position_embeddings)
    return positions - 2 if model.config.model_type in ("roberta", "xlm-roberta") else positions


def _classifier_max_length(model: Any, tokenizer: Any, requested: int | None) -> int:
    """RouteLLM's BERTRouter truncates at the tokenizer's model_max_length (``truncation=True``).

    Tokenizers without a limit report a huge number (1e30); the model cannot take more than
    its position embeddings, so the length is capped there.
    """
    if requested is not None:
        return requested
    return int(min(tokenizer.model_max_length, _position_limit(model)))


def _max_length(folder: Path, model: Any, tokenizer: Any, requested: int | None) -> int:
    """Sentence encoders: the flag, else sentence-transformers' setting, else the tokenizer's own."""
    if requested is not None:
        return requested
    sentence_config = folder / "sentence_bert_config.json"
    if sentence_config.is_file():
        return int(json.loads(sentence_config.read_text())["max_seq_length"])
    return _classifier_max_length(model, tokenizer, None)


def _input_names(tokenizer: Any) -> list[str]:
    return [name for name in _BERT_INPUTS if name in tokenizer.model_input_names]


def _torch_forward(module: torch.nn.Module, tokenizer: Any, prompts: list[str], max_length: int) -> np.ndarray:
    """The PyTorch reference: HF tokenizer + module, one prompt at a time (no padding effects)."""
    outputs = []
    module.eval()
    threads = torch.get_num_threads()
    # One prompt is too small a job to split: extra intra-op threads only wait on each other
    # (20x slower on a busy 2-core machine).
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for prompt in prompts:
                batch = tokenizer([prompt], truncation=True, max_length=max_length, return_tensors="pt")
                outputs.append(module(**{k: v for k, v in batch.items() if k in _BERT_INPUTS}).numpy())
    finally:
        torch.set_num_threads(threads)
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
    int8_check: tuple[Callable[[Path], np.ndarray], np.ndarray] | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Export, fuse and quantize; return precision -> file name, and the manifest's graph facts.

    ``int8_check``: (a graph's win rates on the parity prompts, PyTorch's): int8 then keeps the nodes in
    fp32 that decision agreement at calibrated shares needs (``export/selective.py``).
    """
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
        graphs["fp32"] = graph_file(prefix, "fp32")
        shutil.copyfile(fused, staging / graphs["fp32"])
    if "int8" in options.precisions:
        progress.set_description("quantize int8")
        graphs["int8"] = graph_file(prefix, "int8")
        if int8_check is None:
            facts["int8"] = quantize_graph(fused, staging / graphs["int8"], options.per_channel, options.reduce_range)
        else:
            from edgeroute.export.selective import selective_int8

            win_rates, reference = int8_check
            facts["int8"] = selective_int8(
                fused,
                staging / graphs["int8"],
                options.per_channel,
                options.reduce_range,
                win_rates,
                reference,
                options.int8_min_share_agreement,
                options.int8_tolerance,
            )
    if "fp16" in options.precisions:
        progress.set_description("convert fp16")
        graphs["fp16"] = graph_file(prefix, "fp16")
        to_fp16(fused, staging / graphs["fp16"])
        facts["fp16"] = {"method": "float16 weights and compute, fp32 inputs/outputs"}
    progress.update()
    shutil.rmtree(scratch)
    return graphs, facts


def _check_finite_parity(precision: str, figures: dict[str, Any], options: ExportOptions) -> None:
    if not figures["finite"]:
        raise ExportParityError(
            f"{precision} graph: some win rates are NaN or infinite on the {len(PARITY_PROMPTS)} parity prompts "
            f"(a NaN never counts as verified); nothing was written to {options.out}. "
            "Check the checkpoint's weights and re-export"
        )


def _verify_parity(
    staging: Path, graphs: dict[str, str], reference: np.ndarray, options: ExportOptions, load_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Score the parity prompts through the runtime on each precision and compare with PyTorch.

    Also records the golden scores (a subset of the prompts, each scored alone) in ``golden``.
    """
    if not np.isfinite(reference).all():
        raise ExportParityError(
            f"the PyTorch reference gives NaN or infinite win rates; nothing was written to {options.out}. "
            "The checkpoint's weights or config are broken: re-export a healthy checkpoint"
        )
    figures: dict[str, Any] = {}
    golden = _golden_section(reference)
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
        _check_finite_parity(precision, result, options)
        result.update(verified=True, tolerance=tolerance, device="cpu")
        if result["max_abs_diff"] > tolerance:
            raise ExportParityError(
                f"{precision} graph: max |win rate - PyTorch| = {result['max_abs_diff']:.4f} exceeds the tolerance "
                f"{tolerance} on {len(PARITY_PROMPTS)} prompts; nothing was written to {options.out}. "
                "Try --no-per-channel/--reduce-range, raise --int8-tolerance deliberately, or drop that precision"
            )
        floor = options.int8_min_share_agreement if precision == "int8" else 0.0
        if result["min_share_agreement"] < floor:
            raise ExportParityError(
                f"{precision} graph: decisions agree with PyTorch on only {result['min_share_agreement']:.1%} of "
                f"{len(PARITY_PROMPTS)} prompts at some calibrated share (floor {floor:.0%}); nothing was written to "
                f"{options.out}. Try --no-per-channel/--reduce-range, lower --int8-min-agreement deliberately, "
                "or drop that precision"
            )
        figures[precision] = result
        golden["precisions"][precision] = _golden_scores(router, precision)
    return {
        "reference": "PyTorch fp32 eager, one prompt at a time",
        "n_prompts": len(PARITY_PROMPTS),
        "n_over_max_length": _count_truncated(staging),
        "thresholds": PARITY_THRESHOLDS,
        "precisions": figures,
        "golden": golden,
    }


def _golden_section(reference: np.ndarray) -> dict[str, Any]:
    return {
        "prompts": GOLDEN_PROMPTS,
        "reference": [float(reference[i]) for i in GOLDEN_INDICES],
        "scoring": "each prompt alone; `edgeroute info BUNDLE --verify` and Router.load(verify=True) re-score them",
        "precisions": {},
    }


def _golden_scores(router: Router, precision: str) -> dict[str, Any]:
    """The win rates ``router`` gives the golden prompts, each scored alone, and the drift tolerated."""
    rates = [float(router.strong_win_rates([prompt])[0]) for prompt in GOLDEN_PROMPTS]
    return {"win_rates": rates, "tolerance": _GOLDEN_TOLERANCE[precision]}


def _count_truncated(staging: Path) -> int:
    """How many parity prompts are longer than max_length (so the check covers truncation)."""
    from edgeroute.runtime import read_manifest
    from edgeroute.runtime.scoring.encoders import load_tokenizer

    manifest = read_manifest(staging)
    if manifest.tokenizer is None:  # a remote embedder tokenizes on its side
        return 0
    tokenizer = load_tokenizer(manifest.verify(manifest.tokenizer.file), 10**6)
    tokenizer.no_padding()  # padded, every prompt would look as long as the longest
    return sum(len(e.ids) > manifest.tokenizer.max_length for e in tokenizer.encode_batch(PARITY_PROMPTS))


def _staging_folder(options: ExportOptions) -> Path:
    if options.out.exists() and not options.overwrite:
        raise CheckpointError(f"{options.out}: already exists; pass --overwrite to replace it")
    staging = options.out.parent / f".{options.out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


@contextmanager
def _staged(options: ExportOptions) -> Iterator[Path]:
    """A fresh staging folder beside ``options.out``, removed if anything fails before ``_finish``."""
    staging = _staging_folder(options)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _finish(staging: Path, manifest: dict[str, Any], options: ExportOptions) -> Path:
    write_manifest(staging, manifest)
    if options.out.exists():
        shutil.rmtree(options.out)
    staging.rename(options.out)
    return options.out / MANIFEST_NAME


def _base_manifest(kind: str, options: ExportOptions, checkpoint: Path, source_format: str) -> dict[str, Any]:
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": options.name or options.out.name,
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "models": {"strong": options.strong_name, "weak": options.weak_name},
        "aliases": alias_table(name for name in (options.strong_name, options.weak_name) if name),
        "opset": options.opset,
        "exporter": _library_versions(),
        "source": {
            "format": source_format,
            # The folder's name only: a manifest never carries paths of the machine that exported it.
            "checkpoint": Path(checkpoint).name,
            "weights_sha256": _hash_folder_weights(checkpoint),
        },
        "calibration": None,
        **options.extra_manifest,
    }
    training_report = checkpoint / "training.json"
    if training_report.is_file():  # written by `edgeroute train`: keep the recipe with the artifact
        report = json.loads(training_report.read_text(encoding="utf-8"))
        manifest["source"]["training"] = {key: report.get(key) for key in ("recipe", "n_train", "n_val", "best")}
        # What it learned from: the prompt mix, and a sketch of hashes that lets `edgeroute eval` spot in-sample sets.
        manifest["source"]["training"].update(
            {key: report[key] for key in ("prompts", "prompt_sketch", "generated_chat", "written_chat", "chat_labels") if key in report}
        )
    return manifest


def _save_tokenizer(tokenizer: Any, staging: Path, max_length: int) -> dict[str, Any]:
    tokenizer.backend_tokenizer.save(str(staging / TOKENIZER_FILE))
    return {
        "file": TOKENIZER_FILE,
        "max_length": max_length,
        "truncation": "longer prompts keep their first max_length tokens (special tokens included)",
        "padding": "batches are padded to their longest prompt",
    }


def _bert_num_labels(checkpoint: Path) -> int:
    """Labels as RouteLLM loads them: it passes num_labels=3, so a config.json without labels means 3."""
    config_path = checkpoint / "config.json"
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path}: no readable config.json ({_first_line(exc)})") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    if isinstance(raw.get("id2label"), dict):
        return len(raw["id2label"])
    if isinstance(raw.get("num_labels"), int):
        return raw["num_labels"]
    # transformers leaves a 2-label config's labels out of config.json: the head's rows tell.
    head = _classifier_rows(checkpoint)
    return 3 if head is None else head


def _classifier_rows(checkpoint: Path) -> int | None:
    """Rows of the checkpoint's classifier.weight, or None when there is none to read."""
    safetensors_path = checkpoint / "model.safetensors"
    if safetensors_path.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(safetensors_path), framework="pt") as handle:
                return handle.get_slice("classifier.weight").get_shape()[0] if "classifier.weight" in handle.keys() else None
        except Exception as exc:  # safetensors raises its own SafetensorError for damaged files
            raise CheckpointError(
                f"{safetensors_path}: not a readable safetensors file ({_first_line(exc)}); "
                "the download or copy is probably truncated: fetch the checkpoint again"
            ) from exc
    try:
        weight = read_state_dict(checkpoint).get("classifier.weight")
    except CheckpointError:
        return None  # no weights at all: transformers' loader names the problem
    return None if weight is None else int(weight.shape[0])


def _load_bert(checkpoint: Path) -> tuple[Any, Any]:
    """Tokenizer and 3-label sequence classifier, loaded the way RouteLLM's BERTRouter loads them."""
    from transformers import AutoModelForSequenceClassification

    num_labels = _bert_num_labels(checkpoint)
    if num_labels != 3:
        raise CheckpointError(
            f"{checkpoint}: RouteLLM's BERT router has 3 labels (strong wins, tie, weak wins); this checkpoint has {num_labels}"
        )
    return _load_hf(checkpoint, AutoModelForSequenceClassification, num_labels=3)


def export_bert(checkpoint: Path, options: ExportOptions) -> Path:
    """Export a RouteLLM BERT router (BertForSequenceClassification, 3 labels) to a bundle.

    Labels follow RouteLLM: 0 strong wins, 1 tie, 2 weak wins; win rate = 1 - (p[1] + p[2]).
    Returns the path of the written manifest.
    """
    checkpoint = Path(checkpoint)
    tokenizer, model = _load_bert(checkpoint)
    max_length = _classifier_max_length(model, tokenizer, options.max_length)
    input_names = _input_names(tokenizer)
    labels = [1, 2]
    with _staged(options) as staging:
        with tqdm(total=4, desc="export", unit="step") as progress:
            module = ClassifierLogits(model)
            reference = _softmax_complement(_torch_forward(module, tokenizer, PARITY_PROMPTS, max_length), labels)
            check = (lambda graph: _onnx_classifier_win_rates(graph, tokenizer, input_names, max_length, labels), reference)
            graphs, facts = _write_encoder_graphs(
                module, model.config, input_names, "logits", staging, "classifier", options, progress, check
            )
            manifest = _base_manifest("bert", options, checkpoint, "routellm-bert")
            manifest["tokenizer"] = _save_tokenizer(tokenizer, staging, max_length)
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
            manifest["parity"] = _verify_parity(staging, graphs, reference, options, {})
            manifest["golden"] = manifest["parity"].pop("golden")
            progress.update()
        return _finish(staging, manifest, options)


def _softmax_complement(logits: np.ndarray, labels: list[int]) -> np.ndarray:
    """RouteLLM's BERT win rate, 1 - sum(softmax(logits)[labels]), row by row."""
    with np.errstate(invalid="ignore"):  # infinite logits give NaN, refused by _verify_parity
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return 1.0 - (shifted[:, labels].sum(axis=1) / shifted.sum(axis=1))


def _onnx_classifier_win_rates(graph: Path, tokenizer: Any, input_names: list[str], max_length: int, labels: list[int]) -> np.ndarray:
    """A classifier graph's win rates on the parity prompts, one prompt per run, in the runtime's CPU session."""
    from edgeroute.runtime.scoring.encoders import make_session

    session = make_session(graph, "cpu", 1)
    logits = []
    for prompt in PARITY_PROMPTS:
        batch = tokenizer([prompt], truncation=True, max_length=max_length, return_tensors="np")
        logits.append(session.run(None, {name: batch[name].astype(np.int64) for name in input_names})[0])
    return _softmax_complement(np.concatenate(logits), labels)


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


@dataclass
class _StagedEmbedder:
    """What an MF embedder stage put into the bundle, and how RouteLLM's reference embeds the parity prompts."""

    sections: dict[str, Any]  # manifest sections: embedder, and tokenizer/optimization/quantization where it has them
    files: list[str]
    graphs: dict[str, str] = field(default_factory=dict)
    reference_embed: Callable[[list[str]], np.ndarray] | None = None  # None: the embedder is remote, no parity


def _onnx_embedder(
    encoder: Any, tokenizer: Any, max_length: int, description: dict[str, Any], staging: Path, options: ExportOptions, progress: tqdm
) -> _StagedEmbedder:
    """Export a sentence encoder's graphs and tokenizer (MF routers and the probe tier share this)."""
    input_names = _input_names(tokenizer)
    module = SentenceEmbedding(encoder)
    graphs, facts = _write_encoder_graphs(module, encoder.config, input_names, "sentence_embedding", staging, "embedder", options, progress)
    embedder = {"kind": "onnx", **description, "graphs": graphs, "inputs": input_names, "output": "sentence_embedding"}
    sections = {
        "tokenizer": _save_tokenizer(tokenizer, staging, max_length),
        "embedder": embedder,
        "optimization": {"onnxruntime_fusions": facts.pop("onnxruntime_fusions")},
        "quantization": facts,
    }
    reference = partial(_torch_forward, module, tokenizer, max_length=max_length)
    return _StagedEmbedder(sections, [TOKENIZER_FILE, *graphs.values()], graphs, reference)


def _stage_openai_embedder(
    source: Path | str, checkpoint: Path, text_dim: int, staging: Path, options: ExportOptions, progress: tqdm
) -> _StagedEmbedder:
    progress.update(3)
    return _StagedEmbedder({"embedder": {"kind": "openai", "model": source, "dim": text_dim}}, [])


def _stage_static_embedder(
    source: Path | str, checkpoint: Path, text_dim: int, staging: Path, options: ExportOptions, progress: tqdm
) -> _StagedEmbedder:
    from edgeroute.export.static import STATIC_TABLE_FILE, STATIC_TOKENIZER_FILE, static_embedder

    for name in (STATIC_TABLE_FILE, STATIC_TOKENIZER_FILE):
        if not (checkpoint / name).is_file():
            raise CheckpointError(f"{checkpoint / name}: missing; train with `edgeroute train mf --encoder static`")
    shutil.copyfile(checkpoint / STATIC_TOKENIZER_FILE, staging / TOKENIZER_FILE)
    # float16 storage halves the bundle; rows are averaged in float32 at scoring time.
    table = np.load(checkpoint / STATIC_TABLE_FILE, allow_pickle=False)
    np.save(staging / STATIC_TABLE_FILE, table.astype(np.float16), allow_pickle=False)
    max_length = options.max_length or 512
    sections = {
        "tokenizer": {"file": TOKENIZER_FILE, "max_length": max_length, "truncation": "longer prompts keep their first max_length tokens"},
        "embedder": {
            "kind": "static",
            "file": STATIC_TABLE_FILE,
            "dim": text_dim,
            "storage": "float16",
            "model": "all-MiniLM-L6-v2 distilled to static token embeddings (PCA, SIF weights)",
            "pooling": "mean of the prompt's token rows (no special tokens), then L2 normalization",
        },
    }
    progress.update(3)
    return _StagedEmbedder(sections, [STATIC_TABLE_FILE, TOKENIZER_FILE], reference_embed=static_embedder(checkpoint, max_length))


def _stage_local_embedder(
    source: Path | str, checkpoint: Path, text_dim: int, staging: Path, options: ExportOptions, progress: tqdm
) -> _StagedEmbedder:
    from transformers import AutoModel

    tokenizer, encoder = _load_hf(Path(source), AutoModel, optional=("pooler.",))
    if encoder.config.hidden_size != text_dim:
        raise CheckpointError(
            f"{checkpoint}: text_dim is {text_dim} but the embedder {source} produces "
            f"{encoder.config.hidden_size}-dimensional embeddings; pick the embedder it was trained on"
        )
    max_length = _max_length(Path(source), encoder, tokenizer, options.max_length)
    model = "sentence-transformers/all-MiniLM-L6-v2" if Path(source) == minilm_dir() else Path(source).name
    description = {"model": model, "dim": text_dim, "pooling": "mean over attention mask, then L2 normalization"}
    return _onnx_embedder(encoder, tokenizer, max_length, description, staging, options, progress)


# How each kind of MF prompt embedder is put into a bundle (`_resolve_embedder` names the kind).
_MF_EMBEDDER_STAGES: dict[str, Callable[[Path | str, Path, int, Path, ExportOptions, tqdm], _StagedEmbedder]] = {
    "openai": _stage_openai_embedder,
    "static": _stage_static_embedder,
    "onnx": _stage_local_embedder,
}


def export_mf(checkpoint: Path, options: ExportOptions, embedder: str = "minilm", model_names_file: Path | None = None) -> Path:
    """Export a RouteLLM MF router: the folded head plus its prompt embedder, to a bundle.

    ``embedder`` is 'minilm' (the packaged all-MiniLM-L6-v2, exported into the bundle),
    a local sentence-encoder folder, or 'openai:MODEL' for a remote OpenAI-compatible endpoint
    (RouteLLM's own checkpoints use 'openai:text-embedding-3-small', text_dim 1536).
    """
    checkpoint = Path(checkpoint)
    mf = read_mf_checkpoint(checkpoint, Path(model_names_file) if model_names_file else None)
    strong = options.strong_name or _default_member(mf.model_names, 0)
    weak = options.weak_name or _default_member(mf.model_names, 1)
    for role, name in (("strong", strong), ("weak", weak)):
        if name not in mf.model_names:
            raise CheckpointError(f"{role} model {name!r} is not among the checkpoint's model names")
    options.strong_name, options.weak_name = strong, weak
    embedder_kind, embedder_source = _resolve_embedder(embedder)
    with _staged(options) as staging:
        with tqdm(total=4, desc="export", unit="step") as progress:
            np.save(staging / HEAD_FILE, mf.folded(), allow_pickle=False)
            manifest = _base_manifest("mf", options, checkpoint, "routellm-mf")
            manifest["head"] = {
                "file": HEAD_FILE,
                "model_names": mf.model_names,
                "default_strong": strong,
                "default_weak": weak,
                # Other spellings of the same models (e.g. provider ids): either picks the same row.
                "aliases": alias_table(mf.model_names),
                "folding": "row m = (classifier * normalize(P[m])) @ text_proj; score(m) = row m . embedding",
                "win_rate": {"kind": "sigmoid_difference", "formula": "sigmoid(score(strong) - score(weak))"},
            }
            staged = _MF_EMBEDDER_STAGES[embedder_kind](embedder_source, checkpoint, mf.text_dim, staging, options, progress)
            manifest.update(staged.sections)
            manifest["files"] = {name: {} for name in [HEAD_FILE, *staged.files]}
            write_manifest(staging, manifest)
            progress.set_description("verify parity")
            embed = staged.reference_embed
            reference = None if embed is None else mf.reference_win_rate(embed(PARITY_PROMPTS), strong, weak)
            manifest["parity"] = _mf_parity(mf, staging, staged.graphs, reference, options, strong, weak)
            if "golden" in manifest["parity"]:
                manifest["golden"] = manifest["parity"].pop("golden")
            progress.update()
        return _finish(staging, manifest, options)


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
        router = Router.load(staging)
        figures = parity_figures(reference, router.strong_win_rates(PARITY_PROMPTS))
        _check_finite_parity("static", figures, options)
        if figures["max_abs_diff"] > _FIXED_TOLERANCE["fp32"]:
            raise ExportParityError(f"static router differs from the reference by {figures['max_abs_diff']:.2e}")
        parity.update(
            reference="RouteLLM's unfolded MF formula on the same static embeddings",
            n_prompts=len(PARITY_PROMPTS),
            precisions={"static": {**figures, "verified": True}},
        )
        parity["golden"] = _golden_section(reference)
        parity["golden"]["precisions"]["static"] = _golden_scores(router, "static")
        return parity
    parity.update(_verify_parity(staging, graphs, reference, options, {}))
    return parity


def export_distilled(checkpoint: Path, options: ExportOptions) -> Path:
    """Export a distilled fast-tier checkpoint (``edgeroute train distilled``): static table, tokenizer, MLP head.

    Parity: the runtime's float32 numpy path against the checkpoint's arrays in float64.
    """
    from edgeroute.export.training.features import reference_win_rates
    from edgeroute.export.static import STATIC_TABLE_FILE, STATIC_TOKENIZER_FILE, static_embedder

    checkpoint = Path(checkpoint)
    for name in (STATIC_TABLE_FILE, STATIC_TOKENIZER_FILE, HEAD_FILE, HEAD_OUT_FILE, "training.json"):
        if not (checkpoint / name).is_file():
            raise CheckpointError(f"{checkpoint / name}: missing; write the checkpoint with `edgeroute train distilled`")
    report = json.loads((checkpoint / "training.json").read_text(encoding="utf-8"))
    options.strong_name = options.strong_name or report["models"]["strong"]
    options.weak_name = options.weak_name or report["models"]["weak"]
    table = np.load(checkpoint / STATIC_TABLE_FILE, allow_pickle=False)
    check_finite(
        {"static table": table, "head": np.load(checkpoint / HEAD_FILE), "head_out": np.load(checkpoint / HEAD_OUT_FILE)}, checkpoint
    )
    with _staged(options) as staging:
        np.save(staging / STATIC_TABLE_FILE, table.astype(np.float16), allow_pickle=False)
        for name in (HEAD_FILE, HEAD_OUT_FILE):
            shutil.copyfile(checkpoint / name, staging / name)
        shutil.copyfile(checkpoint / STATIC_TOKENIZER_FILE, staging / TOKENIZER_FILE)
        manifest = _base_manifest("mf", options, checkpoint, "edgeroute-distilled")
        manifest.update(_distilled_sections(options, table.shape[1], report))
        manifest["files"] = {name: {} for name in (STATIC_TABLE_FILE, HEAD_FILE, HEAD_OUT_FILE, TOKENIZER_FILE)}
        write_manifest(staging, manifest)
        # The reference reads the float16 table the bundle ships, so parity measures the head's arithmetic.
        reference = reference_win_rates(checkpoint, PARITY_PROMPTS, static_embedder(staging, options.max_length or 512))
        router = Router.load(staging)
        figures = parity_figures(reference, router.strong_win_rates(PARITY_PROMPTS))
        _check_finite_parity("static", figures, options)
        if figures["max_abs_diff"] > _FIXED_TOLERANCE["fp32"]:
            raise ExportParityError(f"distilled router differs from its float64 reference by {figures['max_abs_diff']:.2e}")
        manifest["parity"] = {
            "reference": "the checkpoint's MLP in float64 over the same static embeddings",
            "n_prompts": len(PARITY_PROMPTS),
            "precisions": {"static": {**figures, "verified": True}},
        }
        manifest["golden"] = _golden_section(reference)
        manifest["golden"]["precisions"]["static"] = _golden_scores(router, "static")
        return _finish(staging, manifest, options)


def _distilled_sections(options: ExportOptions, dim: int, report: dict[str, Any]) -> dict[str, Any]:
    from edgeroute.export.static import STATIC_TABLE_FILE

    pair = [options.strong_name, options.weak_name]
    return {
        "tokenizer": {
            "file": TOKENIZER_FILE,
            "max_length": options.max_length or 512,
            "truncation": "longer prompts keep their first max_length tokens",
        },
        "embedder": {
            "kind": "static",
            "file": STATIC_TABLE_FILE,
            "dim": dim,
            "storage": "float16",
            "model": report.get("static_model") or f"static token embeddings from {report.get('static_from', 'a static router')}",
            "pooling": "mean of the prompt's token rows (no special tokens), then L2 normalization",
        },
        "head": _mlp_head_section(pair, report["recipe"].get("teacher")),
    }


def _mlp_head_section(pair: list[str | None], teacher: str | None) -> dict[str, Any]:

    return {
        "kind": "mlp",
        "file": HEAD_FILE,
        "output_file": HEAD_OUT_FILE,
        "model_names": pair,
        "default_strong": pair[0],
        "default_weak": pair[1],
        "aliases": alias_table(n for n in pair if n),
        "features": ["embedding", "log1p_chars"],
        "win_rate": {"kind": "sigmoid_mlp", "formula": "sigmoid(w2 . relu(W1 . [embedding, log1p(chars)/8] + b1) + b2)"},
        "teacher": teacher,
    }


def export_probe(checkpoint: Path, options: ExportOptions) -> Path:
    """Export the transformer tier (``edgeroute train probe``): truncated encoder graphs, tokenizer, linear head.

    Parity: each precision's runtime win rates against PyTorch fp32 + the head in float64.
    """
    from edgeroute.export.training.probe import reference_win_rates

    from transformers import AutoModel

    checkpoint = Path(checkpoint)
    for name in (HEAD_FILE, HEAD_OUT_FILE, "training.json", f"{ENCODER_FOLDER}/config.json"):
        if not (checkpoint / name).is_file():
            raise CheckpointError(f"{checkpoint / name}: missing; write the checkpoint with `edgeroute train probe`")
    report = json.loads((checkpoint / "training.json").read_text(encoding="utf-8"))
    # Train/serve consistency: the bundle truncates where training did, and the head saw those embeddings.
    max_length = int(report["recipe"]["max_length"])
    if options.max_length not in (None, max_length):
        raise CheckpointError(
            f"{checkpoint}: the probe was trained on {max_length}-token prompts; "
            f"--max-length {options.max_length} would serve other embeddings: omit it"
        )
    tokenizer, encoder = _load_hf(checkpoint / ENCODER_FOLDER, AutoModel, optional=("pooler.",))
    head = np.load(checkpoint / HEAD_FILE, allow_pickle=False)
    check_finite({"head": head, "head_out": np.load(checkpoint / HEAD_OUT_FILE, allow_pickle=False)}, checkpoint)
    if head.ndim != 2 or head.shape[1] != encoder.config.hidden_size + 2:
        raise CheckpointError(
            f"{checkpoint / HEAD_FILE}: shape {head.shape} does not fit the encoder's "
            f"{encoder.config.hidden_size}-dimensional embeddings (+ length, bias)"
        )
    options.strong_name = options.strong_name or report["models"]["strong"]
    options.weak_name = options.weak_name or report["models"]["weak"]
    description = {
        "model": report["recipe"].get("encoder", ENCODER_FOLDER),
        "dim": int(encoder.config.hidden_size),
        "pooling": f"bottom {encoder.config.num_hidden_layers} layers; mean over attention mask, then L2 normalization",
    }
    with _staged(options) as staging:
        with tqdm(total=4, desc="export", unit="step") as progress:
            staged = _onnx_embedder(encoder, tokenizer, max_length, description, staging, options, progress)
            graphs = staged.graphs
            for name in (HEAD_FILE, HEAD_OUT_FILE):
                shutil.copyfile(checkpoint / name, staging / name)
            manifest = _base_manifest("mf", options, checkpoint, "edgeroute-probe")
            manifest.update(staged.sections)
            manifest["head"] = _mlp_head_section([options.strong_name, options.weak_name], None)
            manifest["files"] = {name: {} for name in [HEAD_FILE, HEAD_OUT_FILE, *staged.files]}
            write_manifest(staging, manifest)
            progress.set_description("verify parity")
            reference = reference_win_rates(checkpoint, PARITY_PROMPTS)
            manifest["parity"] = _verify_parity(staging, graphs, reference, options, {})
            manifest["golden"] = manifest["parity"].pop("golden")
            progress.update()
        return _finish(staging, manifest, options)
