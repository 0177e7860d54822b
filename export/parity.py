"""Parity of exported graphs with the PyTorch reference, on a fixed, varied prompt set."""

from __future__ import annotations

from typing import Any

import numpy as np

# Short and long, easy and hard, several domains and scripts: enough spread for win rates to vary.
PARITY_PROMPTS = [
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
PARITY_THRESHOLDS = [round(0.1 * k, 1) for k in range(1, 10)]


def parity_figures(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Max and mean absolute win-rate difference, and decision agreement per threshold."""
    difference = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    agreement = {
        str(t): float(np.mean((reference >= t) == (candidate >= t))) for t in PARITY_THRESHOLDS
    }
    return {
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
        "agreement": agreement,
        "min_agreement": min(agreement.values()),
    }
