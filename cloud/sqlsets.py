"""A set of values as one SQL parameter: `among(Lock.id, ids)`.

On PostgreSQL `column = ANY(:array)`: one parameter whatever the number of values, so the statement compiles once,
its text is the same for every chunk (SQLAlchemy's and psycopg's caches, the server's prepared statement) and a
1,000-id chunk is not 1,000 parameters rendered, cast and sent one by one (a tenth of the bridge's time in a
flood). Elsewhere (SQLite) the usual `IN (…)`.
"""
from __future__ import annotations

from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from .extensions import db


def among(column: Any, values: Iterable) -> Any:
    """`column IN values` as one array parameter on PostgreSQL."""
    values = list(values)
    if db.session.get_bind().dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(None, values, type_=postgresql.ARRAY(column.type)))
    return column.in_(values)
