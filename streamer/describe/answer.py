"""The JSON an LLM must answer with, and its validation.

The schema goes to the provider as structured output (Ollama ``format``, llama.cpp
``response_format``); every answer is validated again here, because small models and
old servers ignore it. Labels are normalised first (case, common synonyms).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from streamer.describe.taxonomy import BASIC, COMPLEX, normalize_label
from streamer.errors import InvalidAnswerError

MAX_TEXT_CHARS = 600

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "basic": {"type": "string", "enum": list(BASIC)},
        "complex": {
            "type": "array",
            "items": {"type": "string", "enum": list(COMPLEX)},
            "minItems": 1,
            "maxItems": 5,
        },
        "description": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
    },
    "required": ["basic", "complex", "description"],
    "additionalProperties": False,
}


@functools.cache
def _validator() -> Any:
    import jsonschema  # imported on the first answer: not on every command's start-up

    return jsonschema.Draft202012Validator(ANSWER_SCHEMA)


@dataclass(frozen=True, slots=True)
class Answer:
    """A validated LLM answer."""

    basic: str
    complex: tuple[str, ...]
    text: str


def _normalize(obj: Any) -> Any:
    if not isinstance(obj, dict):
        return obj
    out = dict(obj)
    if isinstance(out.get("basic"), str):
        out["basic"] = normalize_label(out["basic"])
    if isinstance(out.get("complex"), str):  # a lone label instead of a list
        out["complex"] = [out["complex"]]
    if isinstance(out.get("complex"), list):
        seen: list[Any] = []
        for item in out["complex"]:
            label = normalize_label(item) if isinstance(item, str) else item
            if label not in seen:
                seen.append(label)
        out["complex"] = seen
    if isinstance(out.get("description"), str):
        out["description"] = " ".join(out["description"].split())
    return out


def parse_answer(text: str) -> Answer:
    """Parse and validate the raw text of an answer.

    Raises:
        InvalidAnswerError: blank text, not JSON, or JSON that breaks the schema.
    """
    if not text or not text.strip():
        raise InvalidAnswerError("blank answer")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidAnswerError(f"answer is not JSON: {text[:80]!r}") from err
    obj = _normalize(obj)
    errors = sorted(_validator().iter_errors(obj), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(answer)"
        raise InvalidAnswerError(f"answer breaks the schema at {where}: {first.message[:120]}")
    return Answer(basic=obj["basic"], complex=tuple(obj["complex"]), text=obj["description"])
