"""The one exception type for mistakes a user can make and fix (missing data, bad key, no weights)."""


class UserError(Exception):
    """Raised with a message that names the offending thing and says how to fix it.

    Entry points catch it, print the message alone (no traceback) and exit non-zero.
    """
