"""The lock's reservation-feed page: set/replace/remove the iCal URL, ask for a sync, see its state and codes."""
from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, url_for
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from ..auth import login_required
from ..domain import DomainError
from ..locks.forms import EmptyForm
from ..scoping import agency_lock_or_404
from ..timeutil import utcnow
from . import manage

bp = Blueprint("feeds", __name__)


class FeedForm(FlaskForm):
    url = StringField("iCal feed URL", validators=[DataRequired(), Length(max=manage.MAX_URL)],
                      description="The listing's calendar export link (Airbnb: Availability → Connect calendars; "
                                  "Booking.com: Rates & Availability → Sync calendars; Vrbo: Calendar → Export).")


def _page(lock, form, status=200):
    feed = manage.feed_of(lock)
    return render_template("feeds/lock_feed.html", lock=lock, feed=feed, form=form, button=EmptyForm(),
                           codes=manage.calendar_codes(lock), now=utcnow()), status


@bp.get("/locks/<lock_id>/feed")
@login_required
def show(lock_id: str):
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    feed = manage.feed_of(lock)
    return _page(lock, FeedForm(url=feed.url if feed else ""))


@bp.post("/locks/<lock_id>/feed")
@login_required
def save(lock_id: str):
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    form = FeedForm()
    if not form.validate_on_submit():
        return _page(lock, form, 400)
    try:
        manage.set_feed(lock, form.url.data, by=g.user)
    except DomainError as exc:
        form.url.errors = [*form.url.errors, exc.message]
        return _page(lock, form, 400)
    flash("Feed saved: it is fetched within seconds, and its reservations become codes.", "ok")
    return redirect(url_for("feeds.show", lock_id=lock.id))


@bp.post("/locks/<lock_id>/feed/sync")
@login_required
def sync_now(lock_id: str):
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    feed = manage.feed_of(lock)
    if EmptyForm().validate_on_submit() and feed is not None:
        manage.request_sync(feed)
        flash("The feed will be fetched again within seconds.", "ok")
    return redirect(url_for("feeds.show", lock_id=lock.id))


@bp.post("/locks/<lock_id>/feed/remove")
@login_required
def remove(lock_id: str):
    lock = agency_lock_or_404(g.user.agency_id, lock_id)
    if EmptyForm().validate_on_submit() and manage.remove_feed(lock, by=g.user):
        flash("Feed removed. The codes it made stay; revoke them from the history if needed.", "ok")
    return redirect(url_for("feeds.show", lock_id=lock.id))
