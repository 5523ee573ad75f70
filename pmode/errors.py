"""The one exception of P-Mode loading, carrying every problem found with its file, P-Mode and field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake in a P-Mode file: where it is (file, P-Mode id, dotted field) and what is wrong."""

    file: str
    pmode: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"pmode {self.pmode!r} field {self.field}" if self.pmode is not None else f"field {self.field}"
        return f"{self.file}: {where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        """The problem as a JSON object (what ``accesspoint pmode validate`` prints)."""
        return {"file": self.file, "pmode": self.pmode, "field": self.field, "message": self.message}


class PModeError(Exception):
    """A P-Mode file that cannot be used; ``problems`` lists every mistake, not just the first."""

    def __init__(self, problems: tuple[Problem, ...] | list[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid P-Mode file")
