"""Long CPU or disk work, moved off the server's event loop.

Under ``qat serve`` every connection is a greenlet on one thread: a greenlet that
validates a 2 GiB archive or copies it to disk without yielding would stall every other
connection (``/healthz`` included) for seconds. Such work runs on gevent's native thread
pool instead, where zlib, numpy and file I/O release the GIL. Anywhere else (workers,
tests serving the app with threads) it simply runs in the caller's thread.

Only work that touches no socket may be sent there: gevent's sockets belong to the
loop's thread.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def gevent_patched() -> bool:
    """Whether this interpreter runs under gevent's patches (started by :mod:`service.server.main`)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


def off_loop(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``work(*args, **kwargs)``, on a native thread when the process runs gevent's server."""
    if not gevent_patched():
        return work(*args, **kwargs)
    import gevent

    result: T = gevent.get_hub().threadpool.apply(work, args, kwargs)
    return result
