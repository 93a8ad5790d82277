"""A failed run-time check as the first line the user reads.

Inside ``fit`` a loss checks its labels with TensorFlow ``Assert`` ops (``kerasce.losses``). When one fails,
TensorFlow raises ``InvalidArgumentError: Graph execution error:`` followed by the trace of every op that
led there (over a hundred lines), and the check's own message comes last, as
``assertion failed: [<message>] [<data>] ...``. :func:`check_failures_first` turns such an error into a
``ValueError`` whose message is that check's text, on one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["check_failures_first", "check_message"]

_MARK = "assertion failed: "


def check_message(error: BaseException) -> str | None:
    """The message of the failed ``Assert`` that `error` reports, on one line; None if it reports none.

    ``assertion failed: [softmax_cross_entropy: ... in [0, 3).] [Got values from] [0] [to] [3]`` becomes
    ``softmax_cross_entropy: ... in [0, 3). Got values from 0 to 3``.
    """
    text = str(error)
    start = text.rfind(_MARK)
    if start < 0:
        return None
    data = text[start + len(_MARK) :].split("\n", 1)[0].strip()
    if not (data.startswith("[") and data.endswith("]")):
        return data or None
    # Assert prints each of its data tensors in brackets, separated by a space.
    return " ".join(part.strip() for part in data[1:-1].split("] [")) or None


@contextlib.contextmanager
def check_failures_first() -> Iterator[None]:
    """Re-raises an error that reports a failed run-time check as ``ValueError(<the check's message>)``.

    Other errors pass through unchanged. The original error stays reachable as the new one's
    ``__context__`` (its traceback is not printed: the check's message is what the user acts on).
    """
    try:
        yield
    except Exception as error:
        message = check_message(error)
        if message is None:
            raise
        raise ValueError(message) from None
