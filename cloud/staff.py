"""An agency's people: invitations, roles, removal. Every rule about who may change whom lives here; the
permission to manage staff at all is checked by the caller through auth/roles.py."""
from __future__ import annotations

import sqlalchemy as sa

from .auth import end_all_sessions
from .auth.roles import ROLES, can
from .domain import Conflict, DomainError
from .extensions import db
from .mailer import enqueue, from_agency
from .models import ApiToken, User
from .timeutil import utcnow

# An account belongs to one agency (User.agency_id): a person working for two agencies uses one address per
# agency. Sign-up is self-service, so the inviting agency is not told that an address has an account elsewhere
# (that would tell anyone whether an address uses KeyDrop): the address's owner gets a notice instead, which
# says so and asks them to give the agency another address.


def _check_actor(actor: User) -> None:
    if not can(actor, "manage_staff"):
        raise DomainError("Only the agency's owner or a manager can manage staff.")


def _check_role(actor: User, role: str) -> None:
    if role not in ROLES or role == "owner":
        raise DomainError("A role is Manager or Staff (the agency has one owner).")


def invite_staff(actor: User, *, email: str, name: str = "", role: str = "staff", link=None) -> User | None:
    """Add a person to the actor's agency with `role`; they get an email with a link to choose a password.
    Inviting again someone removed from this agency brings them back (with a new invitation).
    An address with an account in another agency gets a notice instead (when `link` is given, as for the
    invitation) and nobody is added: the answer is None, which the caller words like a sent invitation."""
    _check_actor(actor)
    _check_role(actor, role)
    email = User.normalize_email(email)
    user = db.session.scalar(sa.select(User).where(User.email == email))
    if user is not None and user.agency_id != actor.agency_id:
        if link is not None:
            agency = actor.agency
            enqueue(user.email, "invite_other_agency", f"{agency.name} tried to invite you to KeyDrop",
                    agency=agency, inviter=actor, **from_agency(agency))
        db.session.commit()
        return None
    if user is not None and user.removed_at is None:
        raise Conflict("This person is already in your agency." + (
            " Use “Resend the invitation” if they lost the email." if user.is_invited else ""))
    if user is None:
        user = User(agency_id=actor.agency_id, email=email, created_at=utcnow())
        db.session.add(user)
    user.name, user.role, user.password_hash, user.removed_at = name.strip(), role, None, None
    db.session.flush()
    _send_invite(actor, user, link)
    db.session.commit()
    return user


def resend_invite(actor: User, member: User, *, link) -> None:
    _check_actor(actor)
    if member.agency_id != actor.agency_id or not member.is_invited:
        raise DomainError("Only a pending invitation can be sent again.")
    _send_invite(actor, member, link)
    db.session.commit()


def _send_invite(actor: User, user: User, link) -> None:
    if link is None:
        return
    agency = actor.agency
    enqueue(user.email, "invite", f"{agency.name} invited you to KeyDrop", agency=agency, inviter=actor,
            link=link(user) if callable(link) else link, **from_agency(agency))


def _check_change(actor: User, member: User, *, owner_refusal: str, self_refusal: str) -> None:
    """actor may change member: both in one agency, member neither the owner nor the actor."""
    _check_actor(actor)
    if member.agency_id != actor.agency_id or member.removed_at is not None:
        raise DomainError("This person is not in your agency.")
    if member.is_owner:
        raise DomainError(owner_refusal)
    if member.id == actor.id:
        raise DomainError(self_refusal)


def set_role(actor: User, member: User, role: str) -> None:
    _check_role(actor, role)
    _check_change(actor, member, owner_refusal="The owner's role cannot be changed.",
                  self_refusal="You cannot change your own role; ask the owner.")
    member.role = role
    if not can(member, "manage_tokens"):  # their API tokens were theirs to manage: they end with the role
        db.session.execute(sa.delete(ApiToken).where(ApiToken.user_id == member.id))
    db.session.commit()


def remove_member(actor: User, member: User) -> None:
    """The person can no longer log in (their sessions end and their API tokens are deleted); the codes they
    generated keep their name in the history."""
    _check_change(actor, member, owner_refusal="The owner cannot be removed.",
                  self_refusal="You cannot remove yourself; ask the owner or another manager.")
    member.removed_at = utcnow()
    member.password_hash = None
    end_all_sessions(member)
    db.session.execute(sa.delete(ApiToken).where(ApiToken.user_id == member.id))
    db.session.commit()


def members(agency_id: int) -> list[User]:
    return list(db.session.scalars(sa.select(User).where(User.agency_id == agency_id, User.removed_at.is_(None))
                                   .order_by(User.id)))
