"""Who may ask how often: request limits per identity, token budgets, and a cap on concurrent
streams, counted in this process or in Redis shared by every gateway instance.

The article limits with Upstash's ``slidingWindow(10, '1 m')`` keyed by ``x-forwarded-for``; this
package keeps its default (10 requests a minute per IP for anonymous use) and adds limits per key,
user, org and route, exact across instances (a sliding log, not an estimate), tokens per minute
charged with the real usage after the stream, stream slots that a crashed instance cannot leak,
a chosen behaviour when Redis is down, and the headers clients and SDKs read to pace themselves.

    limiter = RateLimiter.create(settings.limits)
    decision = await limiter.check_requests(settings.limits.request_rules(subject, route))
    if not decision.allowed:
        ...  # 429 (503 when decision.unavailable), with decision.headers()

Modules: ``model`` (settings, subjects, rules, decisions and their headers), ``limiter`` (the
``RateLimiter``, its leases and its Redis failure handling), ``decide`` (rules to counters, counts
to decisions), ``base`` (the store interface), ``memory`` and ``shared`` (the in-process and
Redis stores).
"""

from tokenrelay.ratelimit.limiter import Lease, RateLimiter
from tokenrelay.ratelimit.model import (
    Decision,
    LimitSettings,
    Rule,
    Subject,
    SubjectKind,
    WindowState,
    parse_limit,
)

__all__ = [
    "Decision",
    "Lease",
    "LimitSettings",
    "RateLimiter",
    "Rule",
    "Subject",
    "SubjectKind",
    "WindowState",
    "parse_limit",
]
