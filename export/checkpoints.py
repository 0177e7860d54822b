"""Readers of RouteLLM's checkpoint formats, and the fold of an MF model into one matrix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeroute.runtime.errors import InvalidInputError

# RouteLLM's MF checkpoints index P.weight rows by these Chatbot Arena model names (in order).
ROUTELLM_ARENA_MODELS = [
    "RWKV-4-Raven-14B",
    "alpaca-13b",
    "chatglm-6b",
    "chatglm2-6b",
    "chatglm3-6b",
    "claude-1",
    "claude-2.0",
    "claude-2.1",
    "claude-instant-1",
    "codellama-34b-instruct",
    "deepseek-llm-67b-chat",
    "dolly-v2-12b",
    "dolphin-2.2.1-mistral-7b",
    "falcon-180b-chat",
    "fastchat-t5-3b",
    "gemini-pro",
    "gemini-pro-dev-api",
    "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-0314",
    "gpt-3.5-turbo-0613",
    "gpt-3.5-turbo-1106",
    "gpt-4-0125-preview",
    "gpt-4-0314",
    "gpt-4-0613",
    "gpt-4-1106-preview",
    "gpt4all-13b-snoozy",
    "guanaco-33b",
    "koala-13b",
    "llama-13b",
    "llama-2-13b-chat",
    "llama-2-70b-chat",
    "llama-2-7b-chat",
    "llama2-70b-steerlm-chat",
    "mistral-7b-instruct",
    "mistral-7b-instruct-v0.2",
    "mistral-medium",
    "mixtral-8x7b-instruct-v0.1",
    "mpt-30b-chat",
    "mpt-7b-chat",
    "nous-hermes-2-mixtral-8x7b-dpo",
    "oasst-pythia-12b",
    "openchat-3.5",
    "openchat-3.5-0106",
    "openhermes-2.5-mistral-7b",
    "palm-2",
    "pplx-70b-online",
    "pplx-7b-online",
    "qwen-14b-chat",
    "qwen1.5-4b-chat",
    "qwen1.5-72b-chat",
    "qwen1.5-7b-chat",
    "solar-10.7b-instruct-v1.0",
    "stablelm-tuned-alpha-7b",
    "starling-lm-7b-alpha",
    "stripedhyena-nous-7b",
    "tulu-2-dpo-70b",
    "vicuna-13b",
    "vicuna-33b",
    "vicuna-7b",
    "wizardlm-13b",
    "wizardlm-70b",
    "yi-34b-chat",
    "zephyr-7b-alpha",
    "zephyr-7b-beta",
]
ROUTELLM_DEFAULT_PAIR = ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")
MODEL_IDS_FILE = "model_ids.json"


class CheckpointError(InvalidInputError):
    """A checkpoint folder is not in the expected RouteLLM format, or export options are wrong."""


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Weights from ``model.safetensors`` or a torch state dict (loaded with weights_only).

    Unreadable files and state dicts holding anything but tensors raise ``CheckpointError``.
    """
    safetensors_path = folder / "model.safetensors"
    if safetensors_path.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(safetensors_path))
        except Exception as exc:  # safetensors raises its own SafetensorError for damaged files
            raise CheckpointError(
                f"{safetensors_path}: not a readable safetensors file ({str(exc)[:160]}); "
                "the download or copy is probably truncated: fetch the checkpoint again"
            ) from exc
    for name in ("pytorch_model.bin", "model.pt", "model.bin"):
        path = folder / name
        if path.is_file():
            return _read_torch_state(path)
    raise CheckpointError(f"{folder}: no weights found; expected model.safetensors or pytorch_model.bin (a torch state dict)")


def _read_torch_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        # weights_only refuses pickled code: a checkpoint must never run anything on load.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a torch state dict of tensors ({str(exc).splitlines()[0][:160]}); "
            "save the weights with torch.save(model.state_dict(), ...) or as model.safetensors"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    odd = sorted(str(key) for key, value in state.items() if not isinstance(value, torch.Tensor))
    if odd:
        raise CheckpointError(
            f"{path}: entries {', '.join(odd[:5])} are not tensors; "
            "save the weights with torch.save(model.state_dict(), ...) or as model.safetensors"
        )
    return state


def check_finite(arrays: dict[str, np.ndarray], folder: Path) -> None:
    """Raise ``CheckpointError`` naming the first weights that hold NaN or infinity."""
    for name, array in arrays.items():
        if not np.isfinite(array).all():
            raise CheckpointError(
                f"{folder}: weights {name} hold NaN or infinite values; the checkpoint is damaged "
                "or training diverged: export a checkpoint from before the divergence"
            )


@dataclass
class MFCheckpoint:
    """RouteLLM's MFModel weights: model embeddings P, projection W (or identity), classifier c."""

    model_embeddings: np.ndarray  # [num_models, dim]
    projection: np.ndarray | None  # [dim, text_dim], None when use_proj is false
    classifier: np.ndarray  # [dim]
    model_names: list[str]
    text_dim: int

    def folded(self) -> np.ndarray:
        """One [num_models, text_dim] matrix F with score(model) = F[model] · prompt_embedding.

        RouteLLM computes classifier(normalize(P[m]) * proj(e)); the product is linear in e,
        so it equals ((c * normalize(P[m])) @ W) · e.
        """
        norms = np.linalg.norm(self.model_embeddings, axis=1, keepdims=True)
        scaled = self.model_embeddings / np.maximum(norms, 1e-12) * self.classifier[None, :]
        folded = scaled if self.projection is None else scaled @ self.projection
        return folded.astype(np.float32)

    def reference_win_rate(self, embeddings: np.ndarray, strong: str, weak: str) -> np.ndarray:
        """RouteLLM's own computation, unfolded, in float64: the parity reference."""
        e = embeddings.astype(np.float64)
        projected = e if self.projection is None else e @ self.projection.T.astype(np.float64)
        p = self.model_embeddings.astype(np.float64)
        p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
        logits = [(p[self.model_names.index(name)][None, :] * projected) @ self.classifier.astype(np.float64) for name in (strong, weak)]
        return 1.0 / (1.0 + np.exp(-(logits[0] - logits[1])))


def _first_present(state: dict[str, torch.Tensor], keys: tuple[str, ...], folder: Path) -> torch.Tensor:
    for key in keys:
        if key in state:
            return state[key]
    raise CheckpointError(f"{folder}: weights lack {' or '.join(keys)} (found: {', '.join(sorted(state))})")


def read_model_names(folder: Path, names_file: Path | None, num_models: int) -> list[str]:
    """Model names in row order: from ``names_file``, the checkpoint's model_ids.json, or RouteLLM's list."""
    source = names_file or (folder / MODEL_IDS_FILE if (folder / MODEL_IDS_FILE).is_file() else None)
    if source is None:
        names = list(ROUTELLM_ARENA_MODELS)
    else:
        try:
            mapping = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{source}: not a readable JSON file ({exc}); expected a name-to-row JSON object") from exc
        if not isinstance(mapping, dict) or sorted(mapping.values()) != list(range(len(mapping))):
            raise CheckpointError(f"{source}: expected a JSON object mapping model name to rows 0..N-1")
        names = [name for name, _ in sorted(mapping.items(), key=lambda item: item[1])]
    if len(names) != num_models:
        raise CheckpointError(
            f"{folder}: checkpoint has {num_models} model rows but {len(names)} model names; "
            "pass --model-names with a name-to-index JSON map that matches"
        )
    return names


def _read_mf_config(config_path: Path) -> dict:
    """config.json of an MF checkpoint, with dim, num_models and text_dim as positive integers."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path}: not valid JSON ({exc}); restore the checkpoint's config.json") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object with dim, num_models, text_dim")
    missing = [key for key in ("dim", "num_models", "text_dim") if key not in config]
    if missing:
        raise CheckpointError(f"{config_path}: lacks {', '.join(missing)}")
    for key in ("dim", "num_models", "text_dim", "num_classes"):
        value = config.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
            raise CheckpointError(f"{config_path}: '{key}' must be a positive integer, got {value!r}")
        config[key] = int(value)
    if config["num_classes"] != 1:
        raise CheckpointError(f"{config_path}: num_classes must be 1 (RouteLLM's MF router), got {config['num_classes']}")
    return config


def read_mf_checkpoint(folder: Path, names_file: Path | None = None) -> MFCheckpoint:
    """Read a RouteLLM MF checkpoint folder (config.json + weights)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing; an MF checkpoint has config.json with dim, num_models, text_dim, ...")
    config = _read_mf_config(config_path)
    state = read_state_dict(folder)
    embeddings = _first_present(state, ("P.weight",), folder).float().numpy()
    classifier = _first_present(state, ("classifier.0.weight", "classifier.weight"), folder).float().numpy()
    use_proj = bool(config.get("use_proj", True))
    projection = _first_present(state, ("text_proj.0.weight", "text_proj.weight"), folder).float().numpy() if use_proj else None
    check_finite({"P.weight": embeddings, "classifier": classifier}, folder)
    if projection is not None:
        check_finite({"text_proj": projection}, folder)
    dim, text_dim, num_models = config["dim"], config["text_dim"], config["num_models"]
    expected = {"P.weight": (num_models, dim), "classifier": (1, dim)}
    if projection is not None:
        expected["text_proj"] = (dim, text_dim)
    shapes = {"P.weight": embeddings.shape, "classifier": classifier.shape}
    if projection is not None:
        shapes["text_proj"] = projection.shape
    if shapes != expected:
        raise CheckpointError(f"{folder}: weight shapes {shapes} do not match config.json {expected}")
    if projection is None and text_dim != dim:
        raise CheckpointError(f"{config_path}: use_proj is false, so text_dim must equal dim")
    return MFCheckpoint(
        model_embeddings=embeddings,
        projection=projection,
        classifier=classifier[0],
        model_names=read_model_names(folder, names_file, num_models),
        text_dim=text_dim,
    )
