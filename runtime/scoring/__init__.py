"""The scoring core: bundles, typed manifests, encoders, scorers, and the one ``Decision``.

Ships with the runtime-only install (onnxruntime, tokenizers, numpy); never imports the serving or
evaluation stages, torch, or the build side.
"""
