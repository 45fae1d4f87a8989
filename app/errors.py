"""Domain exceptions. Each has a stable machine-readable ``code``; ``app/api/errors.py`` maps them to HTTP."""

from __future__ import annotations


class KommunrouterError(Exception):
    """Base of every error this project raises on purpose; the CLI prints its message as one line."""

    code = "error"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class ConfigurationError(KommunrouterError):
    """A setting or a configuration file is invalid."""

    code = "invalid_configuration"


class DataError(KommunrouterError):
    """Labelled data does not follow the data format or the taxonomy."""

    code = "invalid_data"


class AuditUnavailable(KommunrouterError):
    """The audit database cannot record a decision; the service refuses to answer without its audit row."""

    code = "audit_unavailable"


class DecisionNotFound(KommunrouterError):
    """No routing decision with this request id is in the audit log."""

    code = "decision_not_found"


class DuplicateDecision(KommunrouterError):
    """A routing decision with this request id is already in the audit log."""

    code = "duplicate_request_id"


class InvalidFeedback(KommunrouterError):
    """A reviewer's correction does not fit the decision (unknown label, keyword outside the text)."""

    code = "invalid_feedback"


class FeedbackConflict(KommunrouterError):
    """A correction that cannot apply to its decision: a keyword outside the decision's text, or keywords that
    overlap (answered with HTTP 409: the request is well-formed, the decision it names does not fit it)."""

    code = "feedback_conflict"


class IdempotencyKeyReused(KommunrouterError):
    """An Idempotency-Key already used by this client for a different request."""

    code = "idempotency_key_reused"


class SchemaOutdated(KommunrouterError):
    """The audit database's schema is not at the revision this version of the service needs."""

    code = "schema_outdated"


class InvalidInput(KommunrouterError):
    """A request is well-formed JSON but its content breaks a rule of the service (answered with HTTP 422)."""

    code = "invalid_input"


class EmptyText(InvalidInput):
    """The report text is empty or only whitespace."""

    code = "empty_text"


class TextTooLong(InvalidInput):
    """The report text has more characters than the configured limit."""

    code = "text_too_long"


class InvalidText(InvalidInput):
    """The report text holds characters that no typed report contains (control characters, lone surrogates)."""

    code = "invalid_text"


class BatchTooLarge(InvalidInput):
    """A batch request has more items than the configured limit."""

    code = "batch_too_large"


class AuthenticationRequired(KommunrouterError):
    """No API key, or one that no client holds."""

    code = "unauthorized"


class PermissionDenied(KommunrouterError):
    """The client's API key lacks the scope an endpoint needs."""

    code = "forbidden"


class ServiceUnavailable(KommunrouterError):
    """The service cannot take the request now (starting or shutting down)."""

    code = "service_unavailable"


class BaseModelError(KommunrouterError):
    """The pretrained base encoder cannot be built, or disagrees with its reference."""

    code = "base_model_error"
