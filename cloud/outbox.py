"""What every outbox table (mail, webhook deliveries) and every polling worker share: claiming a due row,
putting back rows a dead worker left "sending", exponential backoff, and the worker loop itself."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Callable

import sqlalchemy as sa

from .extensions import db


def backoff(attempts: int, base_s: float, max_s: float) -> float:
    """base × 2^(attempts−1), capped."""
    return min(base_s * (2 ** max(attempts - 1, 0)), max_s)


def requeue_stale(model, now: datetime, stale_after_s: float) -> None:
    """Rows a worker claimed but never finished (it died) go back to pending."""
    stale = now - timedelta(seconds=stale_after_s)
    db.session.execute(sa.update(model).where(model.status == "sending", model.claimed_at < stale)
                       .values(status="pending", claimed_at=None))
    db.session.commit()


def claim(model, row_id: int, now: datetime) -> bool:
    """pending → sending with a conditional UPDATE committed before the send: two workers never send one row."""
    res = db.session.execute(sa.update(model).where(model.id == row_id, model.status == "pending")
                             .values(status="sending", claimed_at=now, attempts=model.attempts + 1))
    db.session.commit()
    return res.rowcount == 1


def run_periodically(step: Callable[[], object], interval: float, *, log: logging.Logger, what: str,
                     stop: Callable[[], bool] | None = None) -> None:
    """Call step() every `interval` s until stop(); a failed pass (database hiccup) is logged and rolled back."""
    while stop is None or not stop():
        try:
            step()
        except Exception:
            log.exception("%s pass failed", what)
            db.session.rollback()
        finally:
            db.session.remove()
        time.sleep(interval)
