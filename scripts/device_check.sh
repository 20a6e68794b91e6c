#!/usr/bin/env bash
# The GPU check, for whoever has a CUDA device (at most ~8 minutes on one GPU):
#   1. the CUDA tests: pytest -m cuda (AMP bf16 and fp16 with the scaler, channels_last, torch.compile,
#      DDP over NCCL with one process, the dense CRF on the device);
#   2. scripts/benchmark.py resnet50 against torchvision's, bf16, channels_last, batch 256;
# then prints one markdown table of both. Files go to $OUT (default ./device_check): pytest.txt, bench.csv,
# device_check.md.
#   bash scripts/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-device_check}"
mkdir -p "$OUT"

python -c "import zoo" 2>/dev/null || pip install -q --no-deps -e . >/dev/null
python - <<'PY' || { echo "error: no CUDA device visible to torch; this check needs one"; exit 2; }
import sys, torch
sys.exit(0 if torch.cuda.is_available() else 1)
PY

start=$(date +%s)
timeout 300 python -m pytest -m cuda -o addopts="" -v -p no:cacheprovider tests/test_cuda.py > "$OUT/pytest.txt" 2>&1
tests_rc=$?
tests_s=$(( $(date +%s) - start ))

start=$(date +%s)
timeout 240 python scripts/benchmark.py resnet50 --device cuda --precision bf16 --channels-last --batch-size 256 \
    --torchvision --steps 20 --warmup 5 --repeats 3 --csv "$OUT/bench.csv" > "$OUT/bench.txt" 2>&1
bench_rc=$?
bench_s=$(( $(date +%s) - start ))

python - "$OUT" "$tests_rc" "$tests_s" "$bench_rc" "$bench_s" <<'PY'
import csv, re, sys
from pathlib import Path

import torch

out, tests_rc, tests_s, bench_rc, bench_s = Path(sys.argv[1]), *map(int, sys.argv[2:])
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
lines = [f"GPU: {gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}", "",
         "| check | result | time (s) |", "|---|---|---:|"]
report = (out / "pytest.txt").read_text()
for m in re.finditer(r"^(tests/test_cuda\.py::\S+) (PASSED|FAILED|SKIPPED|ERROR)", report, re.M):
    lines.append(f"| `{m.group(1).split('::')[1]}` | {m.group(2)} | |")
summary = [l for l in report.splitlines() if re.search(r"\d+ (passed|failed)", l)]
lines.append(f"| pytest -m cuda | {'rc 0' if tests_rc == 0 else f'rc {tests_rc}'}: {summary[-1].strip('= ') if summary else 'no summary'} | {tests_s} |")
lines.append(f"| benchmark | rc {bench_rc} | {bench_s} |")
lines.append("")
bench = out / "bench.csv"
if bench.exists():
    rows = list(csv.DictReader(bench.open()))
    keys = [k for k in ("model", "impl", "precision", "batch_size", "train_samples_s", "infer_samples_s", "train_step_ms",
                        "peak_memory_mb", "vs_torchvision_train")
            if rows and k in rows[0]] or (list(rows[0]) if rows else [])
    lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    def cell(v: str) -> str:
        try:
            return v if v.isdigit() else f"{float(v):,.2f}"
        except ValueError:
            return v
    lines += ["| " + " | ".join(cell(r.get(k, "")) for k in keys) + " |" for r in rows]
else:
    lines.append("(no bench.csv: see bench.txt)")
text = "\n".join(lines)
(out / "device_check.md").write_text(text + "\n")
print(text)
PY
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
