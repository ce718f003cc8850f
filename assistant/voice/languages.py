"""The languages a model answers in, for the Wyoming announcement.

Home Assistant offers a Wyoming conversation agent only for the languages its handle
program lists: an empty list makes the agent unselectable in every voice assistant. The
languages come from the model families' own cards; a model of an unknown family is taken
as English, which every supported family handles.
"""

from __future__ import annotations

# Model-id prefix → languages (Home Assistant codes), longest prefix first on lookup.
_FAMILIES: dict[str, tuple[str, ...]] = {
    # SmolLM2's card: "primarily understand and generate content in English".
    "smollm": ("en",),
    "tinyllama": ("en",),
    # Qwen2.5's card names these among its 29+ languages.
    "qwen2": ("en", "zh", "fr", "es", "pt", "de", "it", "ru", "ja", "ko", "vi", "th", "ar"),
    # Llama 3.1/3.2: the eight officially supported languages.
    "llama-3": ("en", "de", "fr", "it", "pt", "hi", "es", "th"),
}
DEFAULT_LANGUAGES = ("en",)


def model_languages(model_id: str) -> tuple[str, ...]:
    """The languages of a model, from its id's family prefix."""
    lowered = model_id.lower()
    for prefix in sorted(_FAMILIES, key=len, reverse=True):
        if lowered.startswith(prefix):
            return _FAMILIES[prefix]
    return DEFAULT_LANGUAGES
