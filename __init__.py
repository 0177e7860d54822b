"""edgeroute: quantized ONNX LLM routers and their PyTorch-free runtime.

The repository root is the ``edgeroute`` package (``pyproject.toml`` maps it, with ``runtime/``,
``export/`` and ``models/`` as its subpackages). This file makes it a regular package, both
installed and in a clone: without it, Python run from the parent folder of a clone named
``edgeroute`` merged that folder and the install into one implicit namespace package, taking the
subpackages from the clone while ``edgeroute.__file__`` named neither. Now the clone, being first
on ``sys.path`` there, is the whole package (``edgeroute.__file__`` shows which one loaded), as
with any regular package; and, under ``pip install .``, a folder named ``edgeroute`` without this
file (an output folder, say) no longer shadows the install. (An editable install's finder runs
after the path finder, so there such a stray folder still makes a namespace package.)

Kept empty on purpose: ``import edgeroute.runtime.errors`` must stay cheap.
"""
