"""Domain errors: each names what is wrong in words the caller can show."""


class DomainError(Exception):
    """A rule of the case forbids this action."""


class NotFound(DomainError):
    pass


class InvalidTransition(DomainError):
    """The request is not in a state that allows this step."""
