"""Golden scores: win rates recorded at export, re-scored on the CPU at hand.

An int8 graph that passed its parity check on the exporting machine can score differently
elsewhere (onnxruntime's u8s8 kernels saturate on AVX2 CPUs without VNNI when the weights use
all 8 bits). The manifest's ``golden`` section stores a few prompts with the win rates each
precision gave at export; ``check_golden`` scores them again, one prompt at a time, and raises
``ParityDriftError`` when they moved past the recorded tolerance.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeroute.runtime.errors import ParityDriftError


def check_golden(router: Any) -> dict[str, Any]:
    """Re-score the golden prompts with ``router``; return the figures, or raise ``ParityDriftError``.

    Bundles exported before golden scores existed (or with a remote embedder) are reported as
    not checked rather than refused: they still load.
    """
    manifest = router.manifest
    key = router.precision or manifest.encoder.kind
    found = manifest.golden_scores(key)  # ManifestError when the section is malformed
    if found is None:
        reason = "no golden scores in the manifest (exported by an older edgeroute: re-export to add them)"
        if manifest.golden is not None:
            reason = f"no golden scores recorded for {key!r}"
        return {"precision": key, "checked": False, "reason": reason}
    prompts, stored, reference, tolerance = found.prompts, found.win_rates, found.reference, found.tolerance
    # One prompt at a time: the same way they were recorded, independent of batching.
    scores = np.array([router.strong_win_rates([prompt])[0] for prompt in prompts], dtype=np.float64)
    drift = np.abs(scores - np.asarray(stored, dtype=np.float64))
    max_drift = float(drift.max()) if np.isfinite(drift).all() else math.inf
    report = {"precision": key, "checked": True, "n_prompts": len(prompts), "max_drift": max_drift, "tolerance": tolerance}
    if reference is not None:
        versus = np.abs(scores - np.asarray(reference, dtype=np.float64))
        report["max_abs_diff_vs_fp32_reference"] = float(versus.max()) if np.isfinite(versus).all() else math.inf
    if not max_drift <= tolerance:  # also true for NaN: NaN never verifies
        raise ParityDriftError(
            f"{manifest.folder}: on this CPU the {key} win rates of the {len(prompts)} golden prompts in "
            f"manifest.json differ from those recorded at export by up to {max_drift:.3g} (tolerance "
            f"{tolerance:g}); its kernels do not reproduce the export: load with precision='fp32' "
            "if the bundle has it, or re-export with `edgeroute export ... --reduce-range`"
        )
    return report
