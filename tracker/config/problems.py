"""What a configuration mistake is: a Problem (file, key, reason), and all of them raised together
as one ConfigError. Secret values never appear in either."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    file: str  # the config file, or "environment"
    key: str  # dotted key, env var name, or "line L, column C"; "" for the file as a whole
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}" if self.key else f"{self.file}: {self.reason}"


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

