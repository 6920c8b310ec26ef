"""One error hierarchy for the whole platform.

Domain code raises these; only the HTTP layers render them, always as Pipecat Cloud's
body ``{"code": ..., "error": ...}`` with the matching status.
"""

from __future__ import annotations


class CatteryError(Exception):
    """Base of every error a client may see."""

    status_code: int = 500
    code: str = "INTERNAL_SERVER_ERROR"
    default_message: str = "Internal server error"

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        super().__init__(self.message)

    def to_body(self) -> dict[str, str]:
        return {"code": self.code, "error": self.message}

    @property
    def public_message(self) -> str:
        """A sentence for a caller who sees only a short text (a WebSocket close reason):
        what was wrong with their request, or else the kind of failure, never the
        platform's own details (instance ids, log lines, pool keys)."""
        return self.message if self.status_code in _ABOUT_THE_REQUEST else self.default_message


def without_detail(exc: CatteryError) -> CatteryError:
    """The same answer (status, code) with the message its kind has for anyone: for a
    platform failure whose own text names the platform's insides (an engine's address, an
    exception's repr), which stays in the server's log."""
    public = CatteryError(type(exc).default_message, code=exc.code)
    public.status_code = exc.status_code
    return public


#: statuses whose messages speak of the caller's own request
_ABOUT_THE_REQUEST = frozenset({400, 401, 403, 404, 413})


class InvalidRequest(CatteryError):
    status_code = 400
    code = "GENERIC_BAD_REQUEST"
    default_message = "Invalid request"


class Unauthorized(CatteryError):
    status_code = 401
    code = "401"
    default_message = "Unauthorized: a valid API key is required"


class Forbidden(CatteryError):
    status_code = 403
    code = "FORBIDDEN"
    default_message = "This key may not use this route"


class NotFound(CatteryError):
    status_code = 404
    code = "NOT_FOUND"
    default_message = "Not found"


class AgentNotFound(NotFound):
    default_message = "Agent not found"


class SessionNotFound(NotFound):
    default_message = "Invalid or not-yet-ready session_id"


class Conflict(CatteryError):
    status_code = 409
    code = "CONFLICT"
    default_message = "Conflict"


class PayloadTooLarge(CatteryError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"
    default_message = "Request body too large"


class AtCapacity(CatteryError):
    status_code = 429
    code = "PCC-AGENT-AT-CAPACITY"
    default_message = "Agent is at capacity: all instances are busy"


class ServiceUnavailable(CatteryError):
    status_code = 503
    code = "SERVICE_UNAVAILABLE"
    default_message = "Service unavailable"


class AgentStartFailed(ServiceUnavailable):
    """The instance a start waited for died before it was ready (the bot's import failed)."""

    code = "PCC-AGENT-START-FAILED"
    default_message = "The agent's instance failed to start"


class SessionUnreachable(ServiceUnavailable):
    """The session's instance is on a node the control plane no longer reaches."""

    code = "PCC-SESSION-UNREACHABLE"
    default_message = "The session's instance can't be reached: its machine stopped answering"


class CallerGone(CatteryError):
    """The caller closed its connection before its answer was ready (nobody reads this)."""

    status_code = 499
    code = "CLIENT_CLOSED_REQUEST"
    default_message = "The caller closed the request"


class StartTimeout(CatteryError):
    status_code = 504
    code = "PCC-AGENT-START-TIMEOUT"
    default_message = "The agent did not start in time"


class ImageNotFound(InvalidRequest):
    code = "PCC_IMAGE_NOT_FOUND"
    default_message = "Image not found"


class NotAvailableSelfHosted(CatteryError):
    """A Pipecat Cloud feature with no meaning on a self-hosted platform; the message says
    what to do instead."""

    status_code = 501
    code = "NOT_AVAILABLE_SELF_HOSTED"
    default_message = "Not available on a self-hosted cattery"
