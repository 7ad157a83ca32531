"""Base class for every config section: strict, frozen, documented."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A config section: unknown keys are errors; instances are immutable; a number is
    finite (YAML's ``.nan`` and ``.inf`` are refused as such, not as out of range)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
