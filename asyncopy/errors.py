"""Every error asyncopy raises on purpose.

Two families: ``UsageError`` for bad input, found before anything is written, and
``CopyFailed`` for a copy or verification that went wrong on the way. Each message is one
line an operator can act on: the endpoint, the operation, the offset and length.
``Terminated`` is a stop (SIGTERM, or SIGHUP: ``HungUp``), as KeyboardInterrupt is.
``RbdError`` is the librbd binding's own, raw error: ``map_errors``, the one translation,
turns it and ``OSError`` into an ``EndpointError`` at each endpoint.
"""

from __future__ import annotations

import os
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


class HungUp(Terminated):
    """SIGHUP (a closed terminal, a dropped ssh session) stopped a copy, as SIGTERM does."""


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


class ScsiError(EndpointError):
    """A command ended in CHECK CONDITION; ``sense_key`` says which kind."""

    def __init__(
        self,
        endpoint: str,
        operation: str,
        reason: str,
        offset: int | None,
        length: int | None,
        *,
        sense_key: int,
    ) -> None:
        self.sense_key = sense_key
        super().__init__(endpoint, operation, reason, offset, length)


class ReservationConflict(EndpointError):
    """The target refused a command with RESERVATION CONFLICT: another initiator holds the
    LUN's persistent reservation."""


class RbdError(Exception):
    """A librados or librbd call failed: which call, and its errno. Raised by the binding
    (``asyncopy.access.librbd``); ``map_errors`` turns it into an ``EndpointError`` at the
    endpoint."""

    def __init__(self, call: str, number: int, detail: str = "") -> None:
        self.call, self.errno, self.detail = call, number, detail
        super().__init__(f"{call}{' ' + detail if detail else ''}: {os.strerror(number)}")


@contextmanager
def map_errors(
    endpoint: str, operation: str, offset: int | None = None, length: int | None = None
) -> Iterator[None]:
    """Turn what the system or a library raises inside the block (``OSError``,
    ``RbdError``) into an ``EndpointError`` naming the endpoint, operation and offset: the
    one translation, used at each boundary."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise EndpointError(endpoint, operation, reason, offset, length) from exc
    except RbdError as exc:
        raise EndpointError(endpoint, operation, str(exc), offset, length) from exc
