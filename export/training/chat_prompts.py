"""Unlabeled chat-style prompts for distillation, generated from templates written for this project.

The fast tier learns the teacher's function, so it should see the teacher on the traffic users send,
not only on MMLU and GSM8K. These prompts need no LLM answers: the teacher scores them. Every
template and word list below was written for edgeroute (no prompt text is taken from a package or a
benchmark; MT-Bench questions in particular are never used). Each category has easy and hard
templates, and each prompt may get padding that changes its length but not its difficulty, so that
length alone does not tell the two apart.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np

CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")

_SLOTS: dict[str, tuple[str, ...]] = {
    "topic": (
        "autumn",
        "the ocean",
        "a lost key",
        "friendship",
        "a rainy city",
        "coffee",
        "a first job",
        "moving house",
        "a lighthouse",
        "an old photograph",
        "the night sky",
        "a garden",
        "a train journey",
        "a snow day",
        "a bakery",
        "a library",
        "a marathon",
    ),
    "person": ("my coworker", "my sister", "my landlord", "a new client", "my neighbor", "my teacher", "my team", "my best friend"),
    "occasion": ("a birthday", "a farewell party", "a promotion", "a wedding", "a graduation", "a retirement", "a new baby"),
    "character": ("a pirate", "a medieval knight", "a friendly robot", "a tour guide", "a detective", "a chef", "a wizard", "a cowboy"),
    "expert": (
        "a constitutional lawyer",
        "a startup CFO",
        "a senior security engineer",
        "a trauma surgeon",
        "a central banker",
        "a chess coach",
        "a structural engineer",
        "a clinical psychologist",
        "an investment analyst",
        "a diplomat",
    ),
    "task": (
        "negotiate a salary raise",
        "review a merger agreement",
        "plan a hospital's disaster response",
        "audit a crypto exchange",
        "design a vaccine trial",
        "defend a thesis",
        "mediate a custody dispute",
        "restructure a failing company",
    ),
    "language": ("Python", "JavaScript", "Go", "Rust", "Java", "C++", "TypeScript", "C#"),
    "simple_code": (
        "reverses a string",
        "adds two numbers",
        "prints the numbers 1 to 10",
        "checks if a number is even",
        "returns the largest of three numbers",
        "counts the vowels in a word",
        "converts Celsius to Fahrenheit",
        "joins a list of words with spaces",
    ),
    "hard_code": (
        "a lock-free ring buffer",
        "a B+ tree with range deletes",
        "a Raft consensus module",
        "an incremental garbage collector",
        "a rate limiter shared across data centers",
        "a query planner for joins",
        "a persistent red-black tree",
        "a JIT for a stack VM",
        "a CRDT text editor",
        "a deadlock detector for a thread pool",
    ),
    "fact": (
        "the capital of Italy",
        "the largest planet",
        "the boiling point of water",
        "the author of Hamlet",
        "the number of continents",
        "the chemical symbol for gold",
        "the tallest mountain",
        "the longest river in Africa",
        "the currency of Japan",
    ),
    "field": (
        "quantum field theory",
        "algebraic topology",
        "protein folding",
        "general relativity",
        "immunology",
        "thermodynamics",
        "organic synthesis",
        "control theory",
        "number theory",
        "epigenetics",
        "condensed matter physics",
        "econometrics",
    ),
    "concept": (
        "renormalization",
        "the Yoneda lemma",
        "allosteric regulation",
        "gauge invariance",
        "the Kalman filter",
        "entropy production",
        "the Atiyah-Singer index theorem",
        "spontaneous symmetry breaking",
        "instrumental variables",
        "the Krebs cycle",
    ),
    "thinker": ("Kant", "Hume", "Nietzsche", "Hegel", "Wittgenstein", "Rawls", "Foucault", "Spinoza", "Aristotle", "Arendt"),
    "era": (
        "the fall of Rome",
        "the French Revolution",
        "the Meiji Restoration",
        "the Cold War",
        "the Reformation",
        "the Industrial Revolution",
        "the partition of India",
        "the Thirty Years' War",
        "the collapse of the Bronze Age",
    ),
    "number": tuple(str(n) for n in (3, 7, 12, 15, 24, 36, 48, 64, 99, 120, 250, 1000)),
    "doc": ("email", "invoice", "meeting note", "receipt", "job posting", "product review", "shipping notice", "restaurant menu"),
}

_EASY: dict[str, tuple[str, ...]] = {
    "writing": (
        "Write a short birthday message for {person}.",
        "Write a two-line poem about {topic}.",
        "Give me a title for a blog post about {topic}.",
        "Write a thank-you note to {person} for {occasion} gift.",
        "Write a friendly reminder to {person} about our meeting tomorrow.",
    ),
    "roleplay": (
        "Pretend you are {character} and say hello to me.",
        "Act like {character} and wish me a good morning.",
        "You are {character}. Tell me your favorite food in one sentence.",
        "Pretend to be {character} and greet my friends at {occasion}.",
    ),
    "reasoning": (
        "If today is Tuesday, what day is tomorrow?",
        "Which is heavier, a car or a bicycle?",
        "I have {number} apples and eat one. How many are left?",
        "Is a cat an animal or a plant?",
        "What comes next: 2, 4, 6, 8?",
    ),
    "math": (
        "What is {number} plus {number}?",
        "What is {number} times 2?",
        "Is {number} an even number?",
        "What is half of {number}?",
        "Round 4.7 to the nearest whole number.",
    ),
    "coding": (
        "Write a {language} function that {simple_code}.",
        "How do I print a message in {language}?",
        "Show me how to write a comment in {language}.",
        "How do I make a list of three numbers in {language}?",
    ),
    "extraction": (
        "What is the date in this {doc}: 'See you on June 5th.'",
        "Pull out the name from this {doc}: 'Thanks, Anna.'",
        "What is the total in this {doc}: 'Total: $12.50'?",
        "List the colors in this sentence: 'red shoes and a blue hat'.",
    ),
    "stem": (
        "What is {fact}?",
        "What color is the sky on a clear day?",
        "Do plants need sunlight to grow?",
        "How many legs does a spider have?",
        "Is ice colder than boiling water?",
    ),
    "humanities": (
        "Who wrote Romeo and Juliet?",
        "What is {fact}?",
        "In what country is the Eiffel Tower?",
        "What holiday is on December 25th?",
        "Who was {thinker}? One sentence, please.",
    ),
}

_HARD: dict[str, tuple[str, ...]] = {
    "writing": (
        "Write a sestina about {topic} whose six end words trace the stages of a grief.",
        "Write a story about {topic} in second person whose final line forces a reread of the first scene.",
        "Write a speech about {topic} for a hostile audience, built on concessions that turn into arguments.",
        "Write a letter about {topic} in the voice of two narrators whose accounts slowly contradict each other.",
    ),
    "roleplay": (
        "Act as {expert} and walk me through how you would {task}, justifying each trade-off.",
        "You are {expert}. Stress-test my plan to {task} and name the assumption most likely to fail.",
        "Role-play {expert} advising a board that must {task}; anticipate three hostile objections.",
        "Play an examiner who questions me on {concept} in {field} until my misunderstanding shows.",
    ),
    "reasoning": (
        "{number} people shake hands at a party; prove that two of them shook the same number of hands.",
        "Design a strategy for the {number}-prisoners hat puzzle that saves all but one, and prove it.",
        "A knight and a knave guard two doors; find one question that reveals the safe door, and justify it.",
        "Explain why Newcomb's problem splits evidential and causal decision theory, with a worked payoff table.",
        "Show how Simpson's paradox can reverse a treatment effect with {number} patients, and say which table to trust.",
    ),
    "math": (
        "Prove that the harmonic series diverges and estimate how many terms pass {number}.",
        "Find every real solution of x^4 - {number}x^2 + 1 = 0 and prove that none is missed.",
        "Prove that a continuous function on a closed interval is uniformly continuous.",
        "Compute the number of spanning trees of the complete graph on {number} vertices and prove the formula.",
        "A tank drains at a rate proportional to the square root of its depth; from {number} m, derive the time to empty.",
        "Show that the determinant of a {number}x{number} Vandermonde matrix is the product of pairwise differences.",
    ),
    "coding": (
        "Implement {hard_code} in {language}, and argue why it is correct under concurrency.",
        "Design {hard_code}; give {language} code and its time and space complexity.",
        "Profile and optimize {hard_code} in {language} for a workload that is 95% reads; explain the trade-offs.",
        "Write {hard_code} in {language} with tests for the edge cases you think are hardest.",
    ),
    "extraction": (
        "From this {doc}, infer which clauses conflict with each other and which one a court would likely enforce.",
        "From this {doc}, separate what is measured from what is merely claimed, and rate the strength of each claim.",
        "Merge the figures in these two {doc}s, reconcile the totals that disagree, and explain each adjustment.",
        "From these server logs, infer the first failing component and the chain of failures that followed it.",
    ),
    "stem": (
        "Explain {concept} in {field} rigorously, with a derivation.",
        "Why does {concept} matter in {field}? Derive the key result and state its assumptions.",
        "Compare two competing explanations of {concept} in {field} and say which evidence separates them.",
        "Estimate from first principles how {concept} changes a measurement in {field}, with orders of magnitude.",
    ),
    "humanities": (
        "Compare {thinker} and {thinker} on free will, and assess whether their views can be reconciled.",
        "Weigh the historiographical debate over the causes of {era}, engaging with revisionist accounts.",
        "Analyze how {thinker}'s argument would answer a critic who raises the problem of other minds.",
        "Assess whether {era} was a turning point or the end of a long process, using economic evidence.",
    ),
}

# Length that says nothing about difficulty: politeness, context, format requests.
_PADDING = (
    "Please keep it brief.",
    "Thanks a lot in advance!",
    "I am asking for a friend who is curious.",
    "Use plain language, no jargon.",
    "Format the answer as a short list.",
    "This is for a presentation I give on Friday, so please make it clear.",
    "I have been wondering about this for a while and would love a clear answer.",
    "My manager asked me to look into this before our weekly meeting tomorrow morning.",
    "Answer in English, and keep the tone friendly and relaxed, like you would with a colleague.",
)


def _fill(template: str, rng: random.Random) -> str:
    out = template
    for name, words in _SLOTS.items():
        while "{" + name + "}" in out:
            out = out.replace("{" + name + "}", rng.choice(words), 1)
    return out


def _padded(text: str, rng: random.Random) -> str:
    extra = rng.choice((0, 0, 1, 1, 2, 3))
    return " ".join([text, *rng.sample(_PADDING, extra)]) if rng.random() < 0.5 else " ".join([*rng.sample(_PADDING, extra), text])


def _candidates(rng: random.Random) -> Iterator[tuple[str, bool, str]]:
    while True:
        category = rng.choice(CATEGORIES)
        hard = rng.random() < 0.5
        templates = _HARD[category] if hard else _EASY[category]
        yield _padded(_fill(rng.choice(templates), rng), rng), hard, category


def categorised_chat_prompts(count: int = 6000, seed: int = 0) -> tuple[list[str], list[bool], list[str]]:
    """``chat_prompts``, whether each came from a hard template, and each one's category (``CATEGORIES``)."""
    rng = random.Random(seed)
    seen: dict[str, tuple[bool, str]] = {}
    for prompt, hard, category in _candidates(rng):
        seen.setdefault(prompt, (hard, category))
        if len(seen) >= count:
            break
    return list(seen), [hard for hard, _ in seen.values()], [category for _, category in seen.values()]


def labelled_chat_prompts(count: int = 6000, seed: int = 0) -> tuple[list[str], list[bool]]:
    """``chat_prompts`` and, for each, whether it came from a hard template (the template's intended difficulty)."""
    prompts, hard, _ = categorised_chat_prompts(count, seed)
    return prompts, hard


def chat_prompts(count: int = 6000, seed: int = 0) -> list[str]:
    """``count`` distinct chat-style prompts over ``CATEGORIES``, half from hard templates, in a fixed order per seed."""
    return labelled_chat_prompts(count, seed)[0]


WRITTEN_PROMPTS = Path(__file__).with_name("written_prompts.jsonl")
WRITTEN_PARTS = ("train", "validation")


def written_part(prompt: str) -> str:
    """Which half of the written prompts ``prompt`` falls in: a stable split by the hash of its text."""
    return WRITTEN_PARTS[hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()[0] % 2]


def categorised_written_prompts(part: str, path: Path = WRITTEN_PROMPTS) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The written prompts of ``part`` that carry an intended difficulty: (prompts, hard, categories), in file order."""
    if part not in WRITTEN_PARTS:
        raise ValueError(f"written prompt part {part!r}: expected one of {', '.join(WRITTEN_PARTS)}")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [row for row in rows if row.get("difficulty") in ("easy", "hard") and written_part(row["prompt"]) == part]
    hard = np.array([row["difficulty"] == "hard" for row in rows], dtype=bool)
    return [row["prompt"] for row in rows], hard, np.array([row["category"] for row in rows])
