"""Errors that reach the user as one line and an exit code, never as a traceback."""

from __future__ import annotations

from collections.abc import Iterable

#: Exit code for anything the user wrote wrong (config, arguments, inventory).
EXIT_USAGE = 2
#: Exit code for an operation that was attempted and failed (a host, a task, a daemon).
EXIT_FAILURE = 1


class KubesmithError(Exception):
    """A failure the user can act on; its message names what they wrote or what failed."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        return [self.message]


class DownloadError(KubesmithError):
    """A release file could not be downloaded (offline, unreachable, not there)."""

    def __init__(self, message: str, *, url: str, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.url = url
        self.reason = reason


class UserError(KubesmithError):
    """Bad input: a config key, a file, an argument."""

    exit_code = EXIT_USAGE


class ConfigError(UserError):
    """One or more problems in a stack configuration, all reported together."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))

    def lines(self) -> list[str]:
        return list(self.problems)


class ToolMissingError(UserError):
    """An external command the operation needs is not installed."""
