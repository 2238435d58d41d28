"""The one exception type for mistakes a user can make and fix (missing data, bad key, no weights)."""

# torch's DataLoader re-raises a worker's exception as type(err)("Caught ... Original Traceback ...").
_WORKER_MARKER = "\nengine.errors.UserError: "


class UserError(Exception):
    """Raised with a message that names the offending thing and says how to fix it.

    Entry points catch it, print the message alone (no traceback) and exit non-zero.
    """

    def __init__(self, message: str = ""):
        if isinstance(message, str) and message.startswith("Caught UserError") and _WORKER_MARKER in message:
            message = message.rsplit(_WORKER_MARKER, 1)[1].strip()  # keep the message, drop the worker traceback
        super().__init__(message)
