"""What the SDK does with its own bugs: log once per place and carry on, except under pytest.

The SDK runs inside users' production services, so an evalstream bug must never break a request.
Under pytest (the user's or ours) the same bug is re-raised so it gets noticed and fixed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("evalstream.sdk")

_reported: set[str] = set()


def under_pytest() -> bool:
    return "PYTEST_CURRENT_TEST" in os.environ and os.environ.get("EVALSTREAM_SDK_RERAISE", "1") != "0"


def report(where: str, exc: BaseException) -> None:
    """Log an internal error the first time it happens at `where`; re-raise under pytest."""
    if under_pytest():
        raise exc
    if where not in _reported:
        _reported.add(where)
        log.error("evalstream SDK internal error in %s (further ones here are not logged): %r", where, exc,
                  exc_info=exc)


def warn_once(key: str, message: str, *args: object) -> None:
    if key not in _reported:
        _reported.add(key)
        log.warning(message, *args)


@contextmanager
def internal_errors(where: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the whole point: never raise into user code
        report(where, exc)
