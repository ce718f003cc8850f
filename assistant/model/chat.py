"""Render a model's chat template (Jinja2 from GGUF metadata) in Jinja2's sandbox."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from assistant.model.errors import ModelError


def _raise_exception(message: str) -> None:
    # Templates call raise_exception() to reject bad conversations (HF convention).
    raise ModelError(f"chat template: {message}")


class ChatTemplate:
    """A compiled chat template; the template text is untrusted, hence the sandbox."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "") -> None:
        # trim_blocks/lstrip_blocks match how Hugging Face renders the same templates.
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = _raise_exception
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as err:
            raise ModelError(f"chat template does not compile: {err}") from err
        self.source = source
        self._bos = bos_token
        self._eos = eos_token

    def render_chat(
        self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt text for `messages` ({"role", "content"} dicts)."""
        try:
            return self._template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self._bos,
                eos_token=self._eos,
            )
        except jinja2.TemplateError as err:
            raise ModelError(f"chat template failed: {err}") from err
