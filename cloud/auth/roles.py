"""Staff roles and what each may do: the one place where permissions are decided (pages, API and templates).

owner    everything; the agency has exactly one.
manager  everything but handing over or removing the owner.
staff    day-to-day work (codes, history, locks' pages); cannot reveal backup keys, manage staff, API tokens,
         webhooks, or edit / decommission locks.
"""
from __future__ import annotations

import functools

from flask import abort, g

ROLES = ("owner", "manager", "staff")
ROLE_LABELS = {"owner": "Owner", "manager": "Manager", "staff": "Staff"}

# permission -> roles that hold it
PERMISSIONS: dict[str, frozenset[str]] = {
    "reveal_backup_key": frozenset({"owner", "manager"}),
    "manage_staff": frozenset({"owner", "manager"}),
    "manage_tokens": frozenset({"owner", "manager"}),
    "manage_webhooks": frozenset({"owner", "manager"}),
    "manage_locks": frozenset({"owner", "manager"}),
}


def can(user, permission: str) -> bool:
    """Whether `user` (a User, or None) holds `permission`. Unknown permission names are a programming error."""
    roles = PERMISSIONS[permission]
    return user is not None and user.role in roles


def permission_required(permission: str):
    """View decorator, placed under login_required / token_required (which set g.user): answers 403 (a page
    on the site, {"message": …} under /api/) when the caller's role lacks `permission`."""
    if permission not in PERMISSIONS:
        raise KeyError(permission)

    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if not can(g.get("user"), permission):
                abort(403, description=FORBIDDEN_MESSAGE)
            return view(*args, **kwargs)
        return wrapped
    return decorate


FORBIDDEN_MESSAGE = "Your role does not allow this; ask your agency's owner or a manager."
