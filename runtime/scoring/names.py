"""Model names and their aliases.

RouteLLM's checkpoints name models as Chatbot Arena does (``mixtral-8x7b-instruct-v0.1``);
its evals, configs and OpenAI-compatible servers use provider ids for the same models
(``mistralai/Mixtral-8x7B-Instruct-v0.1``, ``openai/gpt-4-1106-preview``). A bundle's manifest
carries an alias table so that either spelling picks the same model, and a converted RouteLLM
checkpoint and a shipped bundle can be swapped behind one configuration.
"""

from __future__ import annotations

from collections.abc import Iterable

# Provider ids of Arena names whose short form is not simply the id without its "org/" prefix
# (or whose prefix users commonly write). Canonical Arena name -> provider ids.
PROVIDER_IDS: dict[str, tuple[str, ...]] = {
    "mixtral-8x7b-instruct-v0.1": ("mistralai/Mixtral-8x7B-Instruct-v0.1",),
    "mistral-7b-instruct": ("mistralai/Mistral-7B-Instruct-v0.1",),
    "mistral-7b-instruct-v0.2": ("mistralai/Mistral-7B-Instruct-v0.2",),
    "gpt-4-1106-preview": ("openai/gpt-4-1106-preview",),
    "gpt-4-0125-preview": ("openai/gpt-4-0125-preview",),
    "gpt-4-0613": ("openai/gpt-4-0613",),
    "gpt-4-0314": ("openai/gpt-4-0314",),
    "gpt-3.5-turbo-0125": ("openai/gpt-3.5-turbo-0125",),
    "gpt-3.5-turbo-1106": ("openai/gpt-3.5-turbo-1106",),
    "llama-2-70b-chat": ("meta-llama/Llama-2-70b-chat-hf",),
    "llama-2-13b-chat": ("meta-llama/Llama-2-13b-chat-hf",),
    "llama-2-7b-chat": ("meta-llama/Llama-2-7b-chat-hf",),
    "claude-2.1": ("anthropic/claude-2.1",),
    "claude-instant-1": ("anthropic/claude-instant-1",),
}


def name_key(name: str) -> str:
    """Spelling-insensitive key: the part after the last '/', case-folded."""
    return name.rsplit("/", 1)[-1].casefold()


def alias_table(names: Iterable[str]) -> dict[str, str]:
    """Alias -> canonical name for the bundle's ``names`` (the table written into manifests)."""
    names = list(names)
    by_key = {name_key(name): name for name in names}
    table: dict[str, str] = {}
    for arena_name, provider_ids in PROVIDER_IDS.items():
        for spelling in (arena_name, *provider_ids):
            canonical = by_key.get(name_key(spelling))
            if canonical is not None and spelling != canonical:
                table[spelling] = canonical
    return dict(sorted(table.items()))


def resolve_name(name: str, names: Iterable[str], aliases: dict[str, str] | None = None) -> str | None:
    """The canonical spelling of ``name`` among ``names``, or None when it names none of them.

    Order: the exact name, the manifest's alias table, then one unambiguous match of
    ``name_key`` (so bundles exported before alias tables existed accept both spellings too).
    """
    names = list(names)
    if name in names:
        return name
    canonical = (aliases or {}).get(name)
    if canonical in names:
        return canonical
    wanted = name_key(name)
    matches = [candidate for candidate in names if name_key(candidate) == wanted]
    if len(matches) == 1:
        return matches[0]
    for arena_name, provider_ids in PROVIDER_IDS.items():  # e.g. meta-llama/Llama-2-70b-chat-hf
        if wanted in {name_key(spelling) for spelling in (arena_name, *provider_ids)}:
            found = [candidate for candidate in names if name_key(candidate) == name_key(arena_name)]
            if len(found) == 1:
                return found[0]
    return None
