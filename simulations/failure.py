"""The one exception every checker raises: which checker failed, and why."""

from __future__ import annotations


class CheckFailedError(Exception):
    """Raised when a checker finds a violation; carries the checker's name and an explanation."""

    def __init__(self, checker: str, explanation: str) -> None:
        self.checker = checker
        self.explanation = explanation
        super().__init__(f"[{checker}] {explanation}")

    def __reduce__(self) -> tuple[type[CheckFailedError], tuple[str, str]]:
        return (CheckFailedError, (self.checker, self.explanation))
