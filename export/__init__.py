"""edgeroute's export stage: RouteLLM-format checkpoints to quantized ONNX bundles.

Needs the ``export`` extra (PyTorch, transformers, onnx): ``pip install 'edgeroute[export]'``.
This package may import ``edgeroute.runtime``; the runtime never imports it.
"""

from edgeroute.runtime.errors import require_extra

for _module in ("torch", "transformers", "onnx", "safetensors", "tqdm"):
    require_extra(_module, "export", "edgeroute.export")

from edgeroute.export.checkpoints import ROUTELLM_ARENA_MODELS, CheckpointError, MFCheckpoint, read_mf_checkpoint  # noqa: E402
from edgeroute.export.training.classic import TrainReport, embed_prompts, run_train_command, train_bert, train_mf  # noqa: E402
from edgeroute.export.training.data import Battles, load_battles  # noqa: E402
from edgeroute.export.exporter import (  # noqa: E402
    ExportOptions,
    ExportParityError,
    export_bert,
    export_distilled,
    export_mf,
    minilm_dir,
)
from edgeroute.export.kinds import EXPORT_KINDS, run_export_command  # noqa: E402
from edgeroute.export.training.recipes import run_recipe_command  # noqa: E402

__all__ = [
    "ROUTELLM_ARENA_MODELS",
    "CheckpointError",
    "MFCheckpoint",
    "read_mf_checkpoint",
    "ExportOptions",
    "ExportParityError",
    "export_bert",
    "export_mf",
    "export_distilled",
    "run_recipe_command",
    "minilm_dir",
    "run_export_command",
    "EXPORT_KINDS",
    "Battles",
    "load_battles",
    "TrainReport",
    "embed_prompts",
    "run_train_command",
    "train_bert",
    "train_mf",
]
