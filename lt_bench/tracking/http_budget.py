"""MLflow's HTTP settings bounded so that a tracking server that accepts but never answers is
reported within ``tracking.timeout_s``. MLflow reads these settings from the environment at
every request and takes no per-call argument for them, hence the environment."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

#: MLflow's own HTTP retries default to 7 with back-off factor 2 and a 120 s timeout: many minutes
#: of silence before a server that accepts but never answers is reported. ``http_budget`` fits
#: one call's attempts, each waiting its timeout, and the pauses between them in
#: ``tracking.timeout_s`` (default 30 s).
HTTP_KEYS = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
             "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_HTTP_REQUEST_TIMEOUT")
#: most tries of one call (MLflow's retries + 1): a second and third for a stale pooled
#: connection or a server that restarts
HTTP_ATTEMPTS = 3


def http_budget(timeout_s: float) -> dict[str, int | float]:
    """MLflow's HTTP settings for which one call, on a server that never answers, gives up within
    ``timeout_s``: attempts × timeout + back-off pauses ≤ ``timeout_s`` (for ``timeout_s`` ≥ 1).

    urllib3 pauses ``factor × 2^(k-1)`` plus up to ``jitter`` after the k-th failure, k ≥ 2, and
    MLflow reads the factor and the timeout as whole numbers, hence the factor 0 or 1 and the
    jitter (a float) as the short pause below 30 s."""
    total = max(1.0, float(timeout_s))
    factor, jitter = (1, 1.0) if total >= 30 else (0, total / 30)
    for retries in range(HTTP_ATTEMPTS - 1, -1, -1):
        pauses = factor * (2 ** retries - 2) + (retries - 1) * jitter if retries > 1 else 0.0
        per_try = int((total - pauses) // (retries + 1))
        if per_try >= 1 or retries == 0:
            break
    return dict(zip(HTTP_KEYS, (retries, factor, jitter, max(1, per_try))))


#: the environment as the user set it, before this process lowered MLflow's HTTP settings
_user_http: dict[str, str | None] = {}
_bound_s = 30.0  # the timeout_s of the last ``bound_http``


def left_of(timeout_s: float, now: float | None = None) -> float:
    """What is left of ``timeout_s`` since the process started (imports take seconds), while
    it is still starting: the first store call of a command fails within ``timeout_s`` of the
    command's start, not that long after its imports. At least a second; later calls get all
    of it."""
    import lt_bench

    spent = (time.monotonic() if now is None else now) - lt_bench.STARTED
    return max(1.0, timeout_s - spent) if 0 <= spent < timeout_s else timeout_s


def bound_http(timeout_s: float, said: float | None = None) -> None:
    """Put ``http_budget(timeout_s)`` in the environment for every later call of this process
    (MLflow reads it at each request and takes no per-call argument); a lower setting of the
    user's own wins."""
    global _bound_s
    _bound_s = said or timeout_s  # the key's value, for the message
    for key in HTTP_KEYS:
        _user_http.setdefault(key, os.environ.get(key))
    os.environ.update(lowered(http_budget(timeout_s), _user_http))


def lowered(bounds: dict, current: dict[str, str | None]) -> dict[str, str]:
    """``bounds`` as environment values, each the lower of it and ``current``'s value."""
    out = {}
    for key, value in bounds.items():
        try:
            value = min(value, type(value)(current[key])) if current.get(key) else value
        except ValueError:
            pass  # MLflow itself will say what is wrong with the user's value
        out[key] = str(value)
    return out


#: One metric batch to a server that may be away: one retry (for a stale pooled connection) and
#: 5 s to connect and to answer. A batch that fails is kept and sent later (``outbox``), so
#: waiting longer would only stall the training loop.
METRIC_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": 1, "MLFLOW_HTTP_REQUEST_TIMEOUT": 5}


@contextlib.contextmanager
def http_bounds(bounds: dict[str, int]) -> Iterator[None]:
    """MLflow's HTTP retries and timeout lowered to ``bounds`` inside the block (a lower setting of
    the user's wins). MLflow reads these from the environment at every request and takes no
    per-call argument for them, hence the environment."""
    saved = {key: os.environ.get(key) for key in bounds}
    os.environ.update(lowered(bounds, saved))
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
