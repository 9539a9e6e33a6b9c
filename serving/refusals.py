"""Projects whose chat requests the gateway refuses for a reason a higher layer decides: today
a budget's hard cap, reached (``costs.budgets``). This layer never decides; it keeps what it
is told where the gateway reads it at no extra cost.

A refused project has a key of its own in Redis holding the message to answer. The Redis
round trip that admits each request of a kept key (``serving.admission``) reads it with the
generation tokens, so a refusal costs a request nothing more and is seen at the next request
in every gateway process; a key read from Postgres asks ``ftportal.spending.spending_refusal``
instead, which is also how the embedded default (no Redis) refuses. The deciding layer sets
the key with the moment it ends by itself (the budget's month) and clears it when its reason
goes (a raised budget, a removed cap).
"""

from __future__ import annotations

import logging
from datetime import datetime

from redis.exceptions import RedisError

from .generations import cache_key, generation_text, redis_client, redis_url

logger = logging.getLogger(__name__)


def refusal_name(project_id: int) -> str:
    """The Redis key of the project's refusal (under the cache's prefix, as the tokens)."""
    return cache_key(f"serving:refused:{project_id}")


def project_refusal_set(*, project_id: int, message: str, until: datetime) -> None:
    """Refuse the project's chat requests with ``message`` until ``until`` (then the key
    expires by itself). Call it once what decided it is committed."""
    url = redis_url()
    if url is None:
        return
    try:
        redis_client(url).set(
            refusal_name(project_id), message, exat=max(1, int(until.timestamp()))
        )
    except (RedisError, OSError) as failure:
        # Keys read from Postgres are still refused (they ask the hook); said, not hidden.
        logger.error("project %s is refused but Redis could not say so: %s", project_id, failure)


def project_refusal_clear(*, project_id: int) -> None:
    """Serve the project's chat requests again. Call it once what decided it is committed."""
    url = redis_url()
    if url is None:
        return
    try:
        redis_client(url).delete(refusal_name(project_id))
    except (RedisError, OSError) as failure:
        logger.error(
            "project %s is served again but Redis could not say so: %s", project_id, failure
        )


def project_refusal(project_id: int) -> str | None:
    """The refusal Redis holds for the project now (None: none, or no Redis to ask)."""
    url = redis_url()
    if url is None:
        return None
    try:
        value = redis_client(url).get(refusal_name(project_id))
    except (RedisError, OSError):
        return None
    return generation_text(value) or None
