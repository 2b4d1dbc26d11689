"""Domain errors; the API maps each class to one HTTP status."""


class DomainError(Exception):
    """Base of every error a command can raise because of what was asked."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidValue(DomainError):
    """A command argument is malformed (HTTP 422)."""


class NotFound(DomainError):
    """The named policy, snapshot or restore does not exist (HTTP 404)."""


class InvalidTransition(DomainError):
    """The aggregate's state forbids the command, e.g. editing a deleted policy (HTTP 409)."""


class Conflict(DomainError):
    """Another writer got there first, or a unique name is taken (HTTP 409)."""


class Gone(DomainError):
    """The record exists but what was asked of it was deleted, e.g. a deleted snapshot's
    archive (HTTP 410): unlike 404, retrying or fixing the id will not help."""
