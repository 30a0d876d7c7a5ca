"""The mails a door code sends: the agency's copies (owner, and the staff member who made it) and the
guest's, in the guest's language (cloud/i18n.py), all from the agency (its name, Reply-To its address)."""
from __future__ import annotations

from .i18n import LOCALES, guest_link, guest_locale
from .mailer import absolute_url, enqueue, from_agency
from .models import Code, User
from .timeutil import fmt_local


def locale_or_default(locale: str | None) -> str:
    return locale if locale in LOCALES else "en"


def _context(code: Code) -> dict:
    lock = code.lock
    return dict(lock=lock, code=code, tz=lock.timezone, agency=lock.agency,
                start_local=fmt_local(code.valid_from, lock.timezone),
                end_local=fmt_local(code.valid_until, lock.timezone))


def agency_copies(code: Code, by: User | None) -> None:
    """The owner's copy, and the maker's when someone else made it (None: the lock's reservation feed did)."""
    lock = code.lock
    owner = lock.agency.owner
    ctx = _context(code)
    ctx.update(generated_by=by, lock_link=absolute_url("locks.show", lock_id=lock.id),
               history_link=absolute_url("codes.history", lock=lock.id),
               guest_link=guest_link(code) if code.customer_email else None)
    for to in [owner.email] + ([by.email] if by is not None and by.email != owner.email else []):
        enqueue(to, "code_agency", f"Code {code.code} for {lock.name}", **ctx, **from_agency(lock.agency))


def guest_copy(code: Code) -> None:
    """The guest's email, in the code's language: agency, property, door, dates, how to use the keypad."""
    from flask_babel import gettext
    lock = code.lock
    with guest_locale(code.locale):
        subject = gettext("Your door code for %(address)s", address=lock.address)
        enqueue(code.customer_email, "code_customer", subject, guest_link=guest_link(code), **_context(code),
                **from_agency(lock.agency))
