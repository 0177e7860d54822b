"""PyTorch module -> ONNX graph -> onnxruntime transformer fusions -> int8 / fp16."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.optimizer import optimize_model

# onnxruntime's fusion patterns are written for these architectures' attention blocks.
_FUSION_MODEL_TYPES = {"bert": "bert", "distilbert": "bert", "roberta": "bert", "xlm-roberta": "bert", "mpnet": "bert"}


class ClassifierLogits(torch.nn.Module):
    """A sequence classifier reduced to its logits, so the graph has exactly one output."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**inputs).logits


class SentenceEmbedding(torch.nn.Module):
    """Encoder + mean pooling over real tokens + L2 normalization (sentence-transformers' recipe)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


class _PositionalInputs(torch.nn.Module):
    # torch.onnx.export passes positional arguments; map them onto the named model inputs.
    def __init__(self, module: torch.nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.module = module
        self.input_names = input_names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.module(**dict(zip(self.input_names, tensors)))


def export_graph(module: torch.nn.Module, input_names: list[str], output_name: str, path: Path, opset: int) -> None:
    """Export ``module`` with dynamic batch and sequence axes on every input."""
    # A padded sample row keeps tracing from specializing the graph to an all-ones mask.
    sample_by_name = {
        "input_ids": torch.randint(1000, 2000, (2, 8), dtype=torch.long),
        "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3], dtype=torch.long),
        "token_type_ids": torch.zeros(2, 8, dtype=torch.long),
    }
    sample = tuple(sample_by_name[name] for name in input_names)
    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in input_names}
    dynamic_axes[output_name] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _PositionalInputs(module, input_names).eval(),  # a training-mode wrapper would turn dropout on after export
            sample,
            str(path),
            input_names=input_names,
            output_names=[output_name],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,  # the TorchScript exporter yields the graph shapes onnxruntime's fusions match
        )


def optimize_graph(
    source: Path, target: Path, model_type: str, num_heads: int, hidden_size: int, skip_layer_norm: bool = False
) -> dict[str, int]:
    """Apply onnxruntime's transformer fusions; return the counts of fused operators.

    ``skip_layer_norm`` (off by default) fuses residual Add + LayerNormalization into onnxruntime's
    SkipLayerNormalization, whose CPU kernel is 3x slower than the two ops it replaces (see
    ``runtime.scoring.encoders.CPU_DISABLED_OPTIMIZERS``); CUDA sessions fuse them at load anyway.
    """
    optimizer_type = _FUSION_MODEL_TYPES.get(model_type, "bert")
    fusion = FusionOptions(optimizer_type)
    fusion.enable_skip_layer_norm = skip_layer_norm
    optimized = optimize_model(
        str(source), model_type=optimizer_type, num_heads=num_heads, hidden_size=hidden_size, optimization_options=fusion
    )
    optimized.save_model_to_file(str(target))
    return {op: count for op, count in optimized.get_fused_operator_statistics().items() if count}


# The operators onnxruntime's dynamic quantizer turns to int8 in these graphs.
QUANTIZED_OPS = ("MatMul", "Attention", "Gemm")


def quantizable_nodes(graph: Path) -> list[str]:
    """Names of the nodes of ``graph`` that dynamic quantization would run in int8, in graph order."""
    return [node.name for node in onnx.load(str(graph)).graph.node if node.op_type in QUANTIZED_OPS and node.name]


def quantize_graph(source: Path, target: Path, per_channel: bool, reduce_range: bool, keep_fp32: Sequence[str] = ()) -> dict[str, Any]:
    """Dynamic int8 quantization of the weights (``keep_fp32``: nodes left in fp32); returns the manifest's settings.

    Dynamic quantization scales activations over the whole batch, so the runtime scores such
    graphs one prompt per run (``scoring``): a prompt's win rate never depends on its neighbours.
    """
    settings = {
        "method": "dynamic",
        "weight_type": "QInt8",
        "activation_type": "QUInt8",
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "scoring": "one prompt per graph run (activation scales are computed per run), batch-independent",
        "cpu_safety": (
            "7-bit weights (reduce_range): onnxruntime's u8s8 kernels cannot saturate on AVX2 CPUs without VNNI"
            if reduce_range
            else "8-bit weights: u8s8 kernels can saturate on AVX2 CPUs without VNNI; check with `edgeroute info --verify`"
        ),
    }
    if keep_fp32:
        settings["fp32_nodes"] = list(keep_fp32)
    quantize_dynamic(
        str(source),
        str(target),
        per_channel=per_channel,
        reduce_range=reduce_range,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(keep_fp32),
        # Fused operators have no inferred output types; they are float tensors.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return settings


def to_fp16(source: Path, target: Path) -> None:
    """Convert an optimized fp32 graph to fp16 weights and compute, keeping int64/fp32 I/O."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(target))
