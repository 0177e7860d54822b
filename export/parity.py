"""Parity of exported graphs with the PyTorch reference, on a fixed, varied prompt set."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from edgeroute.runtime.scoring.decision import threshold_for_share

# Short and long, easy and hard, several domains and scripts: enough spread for win rates to vary.
HANDWRITTEN_PROMPTS = [
    "Hi!",
    "What is 2 + 2?",
    "Translate 'good morning' into French.",
    "Write a haiku about autumn leaves.",
    "What is the capital of Australia?",
    "Explain the difference between TCP and UDP in two sentences.",
    "Prove that there are infinitely many prime numbers.",
    "Find all real x such that x^4 - 5x^2 + 4 = 0.",
    "A train leaves at 3 pm travelling 80 km/h; another leaves at 4 pm at 100 km/h. When does the second catch up?",
    "Write a Python function that returns the longest palindromic substring of a string, in O(n^2) time.",
    "Summarize the causes of the First World War.",
    "What does the Krebs cycle produce?",
    "Give me three names for a bakery.",
    "Is it ethical to lie to protect someone's feelings? Argue both sides.",
    "Statement 1 | Every group of order 4 is cyclic. Statement 2 | Every cyclic group is abelian.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer:",
    "Which of the following is a renewable resource?\nA. Coal\nB. Natural gas\nC. Wind\nD. Uranium\nAnswer:",
    "Janet has 16 eggs. She eats 3 and bakes muffins with 4. She sells the rest at $2 each. How much does she earn?",
    "Derive the closed form of the sum of the first n squares and prove it by induction.",
    "What's a good recipe for pancakes?",
    "Debug this: for i in range(10) print(i)",
    "Explain quantum entanglement to a ten-year-old.",
    "List the planets of the solar system in order.",
    "Compose a sonnet about the sea in iambic pentameter, with the rhyme scheme ABAB CDCD EFEF GG.",
    "What is the derivative of sin(x) * e^x?",
    "Describe the main arguments of Kant's categorical imperative and a standard objection.",
    "¿Cuál es la capital de Perú?",
    "日本の首都はどこですか？",
    "Write SQL that returns the second highest salary from an Employees table.",
    "How do vaccines train the immune system?",
    "tell me a joke",
    "Plan a three-day itinerary for Rome with a budget of 300 euros.",
    "A patient presents with fever, neck stiffness and photophobia. What is the most likely diagnosis and first test?",
    "Compute the eigenvalues of [[2, 1], [1, 2]].",
    "What is the time complexity of heapsort, and why?",
    "Rewrite this sentence in the passive voice: The committee approved the budget.",
    "Which amendment to the US Constitution abolished slavery?",
    "Design a rate limiter for a distributed API gateway; discuss consistency trade-offs.",
    "ok",
    "Explain why the sky is blue. " * 40,
    "In a 2x2 contingency table with counts 10, 20, 30, 40, compute the chi-square statistic.",
]
# Building blocks of the generated prompts: deterministic (a fixed seed), no downloads.
_TOPICS = [
    "the French Revolution",
    "photosynthesis",
    "binary search trees",
    "the Riemann hypothesis",
    "inflation",
    "TCP congestion control",
    "the immune system",
    "Shakespeare's sonnets",
    "plate tectonics",
    "Bayesian statistics",
    "compound interest",
    "the Roman Empire",
    "neural networks",
    "climate change",
    "quantum computing",
    "the causes of the Great Depression",
    "sorting algorithms",
    "organic chemistry",
    "game theory",
    "jazz harmony",
]
_TASKS = [
    "Explain {t} simply.",
    "Write an essay on {t}.",
    "Give three facts about {t}.",
    "What are common misconceptions about {t}?",
    "Prove a key result related to {t}.",
    "Summarize {t} for an exam.",
    "Write Python code that illustrates {t}.",
    "Compare {t} with {u}.",
    "Quiz me on {t} with five multiple-choice questions.",
    "Why does {t} matter today?",
]
_FILLER = [
    "Please be precise and cite the standard references.",
    "Use short paragraphs.",
    "Assume I am a graduate student.",
    "Include a worked example with numbers.",
    "Avoid jargon where possible.",
    "Here is some context from my notes: {t} was covered in week {k} of the course, together with {u}.",
    "Step {k}: restate the problem, list the assumptions, and check edge cases.",
    "def f{k}(x):\n    return x ** {k} + {k}  # what does this compute for {t}?",
    "Données {k}: calculez la moyenne et l'écart-type.",
    "質問{k}: {t}について説明してください。",
]
N_GENERATED = 260


def _generated_prompt(rng: random.Random, index: int) -> str:
    """One prompt: a task, then 0..~600 words of filler, so lengths span short to past 512 tokens."""
    topic, other = rng.sample(_TOPICS, 2)
    parts = [rng.choice(_TASKS).format(t=topic, u=other)]
    # Lengths cycle through short, medium and long, ending well past any max_length in use.
    target_words = [0, 8, 30, 80, 160, 320, 700][index % 7]
    words = len(parts[0].split())
    while words < target_words:
        sentence = rng.choice(_FILLER).format(t=topic, u=other, k=rng.randint(1, 99))
        parts.append(sentence)
        words += len(sentence.split())
    return " ".join(parts)


def generated_prompts(n: int = N_GENERATED, seed: int = 2024) -> list[str]:
    """``n`` deterministic prompts of varied topics and lengths (some longer than 512 tokens)."""
    rng = random.Random(seed)
    prompts: list[str] = []
    index = 0
    while len(prompts) < n:  # short prompts can repeat: keep drawing until n distinct ones
        prompt = _generated_prompt(rng, index)
        index += 1
        if prompt not in prompts and prompt not in HANDWRITTEN_PROMPTS:
            prompts.append(prompt)
    return prompts


# The export check: the hand-written prompts plus the generated ones (300 in all).
PARITY_PROMPTS = HANDWRITTEN_PROMPTS + generated_prompts()
PARITY_THRESHOLDS = [round(0.1 * k, 1) for k in range(1, 10)]
# Golden prompts (stored with their win rates in the manifest, re-scored on other CPUs):
# every 12th parity prompt, so short, medium and over-long ones, hand-written and generated.
GOLDEN_INDICES = list(range(0, len(PARITY_PROMPTS), 12))
GOLDEN_PROMPTS = [PARITY_PROMPTS[i] for i in GOLDEN_INDICES]


def parity_figures(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Max, p99 and mean absolute win-rate difference, and decision agreement per threshold.

    Non-finite win rates on either side make ``finite`` False (and every figure NaN-safe), so
    that a NaN can never pass as a small difference.
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    finite = bool(np.isfinite(reference).all() and np.isfinite(candidate).all())
    with np.errstate(invalid="ignore"):  # inf - inf: counted as an infinite difference below
        difference = np.abs(reference - candidate)
    if not finite:
        difference = np.where(np.isfinite(difference), difference, np.inf)
    agreement = {str(t): float(np.mean((reference >= t) == (candidate >= t))) for t in PARITY_THRESHOLDS}
    figures = {
        "max_abs_diff": float(difference.max()),
        "p99_abs_diff": float(np.quantile(difference, 0.99, method="higher")),  # an observed value, inf-safe
        "mean_abs_diff": float(difference.mean()),
        "agreement": agreement,
        "min_agreement": min(agreement.values()),
        "finite": finite,
    }
    if finite:
        figures.update(_share_figures(reference, candidate))
    return figures


def _share_figures(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Decision agreement at the thresholds a calibration would set (reference quantiles for 10%..90%
    strong calls) and Spearman's rank correlation: the fixed thresholds 0.1..0.9 say little about a
    router whose win rates all lie in a narrow band."""
    ordered = np.sort(reference)
    shares = {str(t): threshold_for_share(ordered, t) for t in PARITY_THRESHOLDS}
    agreement = {share: float(np.mean((reference >= t) == (candidate >= t))) for share, t in shares.items()}
    ranks = [np.argsort(np.argsort(values, kind="stable")) for values in (reference, candidate)]
    rank_correlation = float(np.corrcoef(*ranks)[0, 1]) if len(reference) > 1 and np.ptp(ranks[0]) else 1.0
    return {"share_agreement": agreement, "min_share_agreement": min(agreement.values()), "rank_correlation": rank_correlation}
