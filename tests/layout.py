"""A tiny synthetic folder in RouteLLM's evals layout (MMLU, GSM8K, MT-Bench)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
DOMAINS = ["algebra", "biology", "chemistry", "drama", "economics", "finance", "geology"]


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_layout(root: Path, per_domain: int = 12) -> Path:
    """Questions whose text says who gets them right, so a router can learn it."""
    for d_index, domain in enumerate(DOMAINS):
        rows = []
        for i in range(per_domain):
            hard = i % 3 == 0
            rows.append(
                {
                    "prompt": f"{domain} question {i}: " + ("prove this difficult theorem rigorously" if hard else "say hello"),
                    WEAK: str(not hard and i % 5 != 1),
                    STRONG: str(hard or i % 7 != 2),
                }
            )
        _write_csv(root / "mmlu" / "responses" / f"mmlu_{domain}.csv", rows)
    (root / "mmlu" / "contaminated_prompts.jsonl").write_text(
        json.dumps({"eval_prompt": "algebra question 1: say hello", "train_prompt": "x"}) + "\n"
    )
    gsm = [
        {
            "prompt": f"Word problem {i}: " + ("multi-step ratio puzzle" if i % 2 else "add two numbers"),
            WEAK: str(i % 2 == 0),
            STRONG: "True",
            f"{WEAK}_response": "...",
            f"{STRONG}_response": "...",
        }
        for i in range(40)
    ]
    _write_csv(root / "gsm8k" / "gsm8k_responses.csv", gsm)
    mt = root / "mt_bench"
    mt.mkdir()
    with open(mt / "question.jsonl", "w") as q, open(mt / "judgements.jsonl", "w") as j:
        for qid in range(1, 11):
            q.write(json.dumps({"question_id": qid, "category": "writing", "turns": [f"Turn one of {qid}", "Turn two"]}) + "\n")
            for turn in (1, 2):
                j.write(json.dumps({"question_id": qid, "model": "gpt-4-1106-preview", "score": 9, "turn": turn}) + "\n")
                j.write(json.dumps({"question_id": qid, "model": "mixtral-8x7b-instruct-v0.1", "score": 5 + qid % 4, "turn": turn}) + "\n")
    return root
