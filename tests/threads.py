"""Running a piece of a test on a thread of its own.

Once a browser test has run, Playwright's sync API keeps its event loop running on the main
thread for the rest of the session (the browser is session-scoped), and there both
``asyncio.run`` and Django's ``async_to_sync`` (the sync test client calling an async view)
refuse to start. A test that needs either runs that part here. Its thread has its own
database connection, so only transactional tests (committed rows) may read rows through it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Result = TypeVar("Result")


def on_own_thread(work: Callable[[], Result]) -> Result:
    """``work``'s result, run on a new thread (its exception raised here)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-own-thread") as pool:
        return pool.submit(work).result()
