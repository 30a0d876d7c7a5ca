"""Agency pages for automation: upcoming arrivals and their readiness, alert settings, webhook endpoints with
their delivery log (webhooks: owner and managers only)."""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from .. import alerts, readiness, webhooks
from ..auth import login_required
from ..auth.roles import permission_required
from ..domain import DomainError
from ..extensions import db
from ..locks.forms import EmptyForm
from ..models import WebhookDelivery, WebhookEndpoint
from ..timeutil import utcnow

bp = Blueprint("automation", __name__)


@bp.get("/arrivals")
@login_required
def arrivals():
    return render_template("automation/arrivals.html", rows=readiness.upcoming(g.user.agency_id), now=utcnow())


@bp.route("/settings/alerts", methods=["GET", "POST"])
@login_required
@permission_required("manage_webhooks")
def alert_settings():
    form = EmptyForm()
    agency = g.user.agency
    if request.method == "POST" and form.validate_on_submit():
        alerts.set_wanted(agency, {k for k in alerts.ALERT_KINDS if request.form.get(k) == "on"})
        flash("Alert settings saved.", "ok")
        return redirect(url_for("automation.alert_settings"))
    return render_template("automation/alerts.html", form=form, kinds=alerts.ALERT_KINDS,
                           on={k for k in alerts.ALERT_KINDS if alerts.wanted(agency, k)})


def _endpoint_or_404(endpoint_id: int) -> WebhookEndpoint:
    ep = db.session.scalar(sa.select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id,
                                                             WebhookEndpoint.agency_id == g.user.agency_id))
    if ep is None:
        abort(404)
    return ep


def _webhooks_page(created: WebhookEndpoint | None = None, error: str | None = None, status: int = 200):
    endpoints = db.session.scalars(sa.select(WebhookEndpoint).where(
        WebhookEndpoint.agency_id == g.user.agency_id).order_by(WebhookEndpoint.id)).all()
    log = db.session.scalars(sa.select(WebhookDelivery).where(
        WebhookDelivery.endpoint_id.in_([e.id for e in endpoints]))
        .order_by(WebhookDelivery.id.desc()).limit(50)).all() if endpoints else []
    return render_template("automation/webhooks.html", endpoints=endpoints, log=log, form=EmptyForm(),
                           types=webhooks.SUBSCRIBABLE, created=created, error=error,
                           url=request.form.get("url", "")), status, {"Cache-Control": "no-store"}


@bp.get("/settings/webhooks")
@login_required
@permission_required("manage_webhooks")
def webhook_list():
    return _webhooks_page()


@bp.post("/settings/webhooks")
@login_required
@permission_required("manage_webhooks")
def webhook_create():
    if not EmptyForm().validate_on_submit():
        return _webhooks_page(error="The form expired; try again.", status=400)
    try:
        ep = webhooks.create_endpoint(g.user, url=request.form.get("url", ""),
                                      events=request.form.getlist("events") or None)
    except DomainError as exc:
        return _webhooks_page(error=exc.message, status=400)
    # rendered, not redirected: the secret is shown once and never sits in a URL or a flash cookie
    return _webhooks_page(created=ep, status=201)


@bp.post("/settings/webhooks/<int:endpoint_id>/delete")
@login_required
@permission_required("manage_webhooks")
def webhook_delete(endpoint_id: int):
    ep = _endpoint_or_404(endpoint_id)
    if EmptyForm().validate_on_submit():
        webhooks.delete_endpoint(ep)
        flash("Webhook endpoint removed.", "ok")
    return redirect(url_for("automation.webhook_list"))
