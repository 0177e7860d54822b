#!/usr/bin/env bash
# One prepared run of the latency harness on a fresh GPU machine (issue 13, item 4), under 8 minutes.
#
#     OUT=/some/folder bash benchmarks/gpu_check.sh
#
# Installs the project with onnxruntime-gpu in place of onnxruntime (same `onnxruntime` module),
# records the machine (nvidia-smi, lscpu, load average), then runs benchmarks/latency.py with a
# hard time limit; everything lands in $OUT: latency.{md,json,txt,png}, machine.txt, run.log.
# CUDA rows: ONNX fp32 and fp16 (onnxruntime.transformers float16 conversion) with IO binding,
# batch-1 latency and batch-128 throughput; PyTorch eager CUDA fp32/fp16 when torch has CUDA.
set -uo pipefail
started=$SECONDS
OUT="${OUT:-/tmp/edgeroute-gpu-out}"
VENV="${VENV:-/tmp/edgeroute-gpu-venv}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
{ date; uptime; nvidia-smi || echo "no nvidia-smi"; lscpu; } > "$OUT/machine.txt" 2>&1

python3 -m venv "$VENV"
. "$VENV/bin/activate"
pip install -q -e ".[export,serve,plot]" >> "$OUT/run.log" 2>&1
pip uninstall -q -y onnxruntime >> "$OUT/run.log" 2>&1
# The [cuda,cudnn] extra (onnxruntime-gpu >= 1.19) brings the CUDA/cuDNN libraries as wheels.
pip install -q "onnxruntime-gpu[cuda,cudnn]>=1.18" >> "$OUT/run.log" 2>&1 \
  || pip install -q "onnxruntime-gpu>=1.18" >> "$OUT/run.log" 2>&1
python - >> "$OUT/machine.txt" 2>&1 <<'PY'
import onnxruntime, torch
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
print("torch", torch.__version__, "cuda", torch.cuda.is_available())
PY

# Whatever the install took, the harness stops before 8 minutes from the start (7.5 min, 30 s margin).
left=$(( 450 - (SECONDS - started) ))
if [ "$left" -lt 60 ]; then echo "install took too long; $left s left" | tee -a "$OUT/run.log"; exit 1; fi
timeout "$left" python benchmarks/latency.py --repeats 60 --throughput-seconds 1 --no-server \
  --threads "$(nproc)" --out "$OUT" >> "$OUT/run.log" 2>&1
status=$?
echo "latency.py exit $status after $(( SECONDS - started )) s" | tee -a "$OUT/run.log"
uptime >> "$OUT/machine.txt"
exit $status
