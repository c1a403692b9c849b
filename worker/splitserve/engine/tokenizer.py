"""Tokenizer from `tokenizer.json` plus the chat template from `tokenizer_config.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer


class Tokenizer:
    def __init__(self, inner: HFTokenizer, settings: dict[str, Any]) -> None:
        self.inner = inner
        self.bos_token = _token_text(settings.get("bos_token"))
        self.eos_token = _token_text(settings.get("eos_token"))
        self.add_bos = bool(settings.get("add_bos_token", False))
        self.bos_token_id = inner.token_to_id(self.bos_token) if self.bos_token else None
        self.eos_token_id = inner.token_to_id(self.eos_token) if self.eos_token else None
        template = settings.get("chat_template")
        self.chat_template: str | None = template if isinstance(template, str) else None
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._template = env.from_string(self.chat_template) if self.chat_template else None

    @staticmethod
    def from_dir(path: str | Path) -> Tokenizer:
        root = Path(path)
        if not (root / "tokenizer.json").exists():
            raise ValueError(f"model directory {root} has no tokenizer.json")
        settings_path = root / "tokenizer_config.json"
        settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
        return Tokenizer(HFTokenizer.from_file(str(root / "tokenizer.json")), settings)

    @property
    def vocab_size(self) -> int:
        return int(self.inner.get_vocab_size())

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids: list[int] = self.inner.encode(text, add_special_tokens=False).ids
        bos = self.add_bos if add_bos is None else add_bos
        if bos and self.bos_token_id is not None and ids[:1] != [self.bos_token_id]:
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        text: str = self.inner.decode(ids, skip_special_tokens=skip_special_tokens)
        return text

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        if self._template is None:
            raise ValueError("this model has no chat_template in tokenizer_config.json")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise ValueError(f"messages[{i}]: expected a dict with string 'role' and 'content'")
        try:
            return self._template.render(
                messages=messages, add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "", eos_token=self.eos_token or "",
            )
        except jinja2.TemplateError as exc:
            raise ValueError(f"chat template failed to render: {exc}") from exc

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        # the template writes the bos token itself
        return self.encode(self.apply_chat_template(messages), add_bos=False)


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        content = value.get("content")
        return content if isinstance(content, str) else None
    return value if isinstance(value, str) else None
