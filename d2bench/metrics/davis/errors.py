"""The one exception of the DAVIS evaluation: bad input, reported to the user as such."""

from __future__ import annotations


class EvalError(ValueError):
    """A dataset or results folder that cannot be evaluated; the message names what and where.

    The CLI turns it into a usage error (exit code 2). It pickles as a plain exception, so an
    error raised in a worker process reaches the caller unchanged.
    """
