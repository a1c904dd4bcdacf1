"""Every error asyncopy raises on purpose.

Two families: ``UsageError`` for bad input, found before anything is written, and
``CopyFailed`` for a copy or verification that went wrong on the way. Each message is one
line an operator can act on: the endpoint, the operation, the offset and length.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class AsyncopyError(Exception):
    """Base of the errors asyncopy raises; never raised itself."""


class UsageError(AsyncopyError):
    """Bad input (missing file, bad size, destination too small): nothing was written."""


class IncompatibleCinder(UsageError):
    """The running Cinder's volume manager is not the one ``asyncopy.cinder.manager`` knows."""


class Terminated(BaseException):  # a stop, as KeyboardInterrupt is, not an error
    """SIGTERM stopped a copy; it was cancelled and cleaned up as Ctrl-C would have."""


class CopyFailed(AsyncopyError):
    """A copy or a verification failed; the destination must not be trusted."""


class EndpointError(CopyFailed):
    """An operation on one endpoint failed."""

    def __init__(
        self,
        endpoint: str,
        operation: str,
        reason: str,
        offset: int | None = None,
        length: int | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.operation = operation
        self.reason = reason
        self.offset = offset
        self.length = length
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.offset is not None:
            where = f" at offset {self.offset}"
            if self.length is not None:
                where += f" (length {self.length})"
        return f"{self.operation} failed on {self.endpoint}{where}: {self.reason}"


class VerificationFailed(CopyFailed):
    """The destination does not hold the bytes that were read from the source."""

    def __init__(self, endpoint: str, ranges: list[tuple[int, int]]) -> None:
        self.endpoint = endpoint
        self.ranges = ranges
        shown = ", ".join(f"{start}+{length}" for start, length in ranges[:8])
        more = f" and {len(ranges) - 8} more" if len(ranges) > 8 else ""
        super().__init__(
            f"verification failed on {endpoint}: {len(ranges)} range(s) differ "
            f"(offset+length): {shown}{more}"
        )


@contextmanager
def endpoint_errors(
    endpoint: str, operation: str, offset: int | None = None, length: int | None = None
) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into an ``EndpointError``."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise EndpointError(endpoint, operation, reason, offset, length) from exc
