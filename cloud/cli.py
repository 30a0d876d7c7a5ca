"""The cloud's commands beside `run`: `flask --app cloud mailer|calendars|automation|bridge|agency create|firmware`."""
from __future__ import annotations

import sys
from typing import Callable

import click
from flask import Flask
from flask.cli import AppGroup


def _until_interrupted(what: str, loop: Callable[[], object]) -> None:
    """A worker's endless loop in the foreground; Ctrl-C ends it quietly (it is how an operator stops it)."""
    click.echo(f"{what} running (Ctrl-C to stop)")
    try:
        loop()
    except KeyboardInterrupt:
        pass


def register(app: Flask) -> None:
    @app.cli.command("mailer")
    @click.option("--once", is_flag=True, help="Deliver what is due, then exit.")
    @click.option("--interval", type=float, default=None, help="Seconds between passes (MAILER_POLL_INTERVAL).")
    def mailer_cmd(once: bool, interval: float | None):
        """Run the outbox worker: deliver queued mails and webhook deliveries with retries and backoff."""
        from .mailer import run_forever, run_pending
        from .webhooks import deliver_pending
        if once:
            counts = run_pending()
            click.echo(f"sent={counts['sent']} retry={counts['retry']} failed={counts['failed']}")
            hooks = deliver_pending()
            click.echo(f"webhooks sent={hooks['sent']} retry={hooks['retry']} failed={hooks['failed']} "
                       f"deferred={hooks['deferred']}")
            return
        _until_interrupted("mailer", lambda: run_forever(interval))

    from .firmware import cli as firmware_cli
    app.cli.add_command(firmware_cli)

    agency = AppGroup("agency", help="Manage agencies (operators, tests).")
    app.cli.add_command(agency)

    @agency.command("create")
    @click.option("--name", required=True)
    @click.option("--email", required=True)
    @click.option("--password", required=True)
    def agency_create(name: str, email: str, password: str):
        """Create an agency and its owner account; prints the agency id."""
        from .domain import DomainError, create_agency
        try:
            ag, _ = create_agency(name=name, email=email, password=password)
        except DomainError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)
        click.echo(ag.id)

    @app.cli.command("calendars")
    @click.option("--once", is_flag=True, help="Sync every feed once, then exit.")
    @click.option("--tick", type=float, default=5.0, help="Seconds between looks for due feeds.")
    def calendars_cmd(once: bool, tick: float):
        """Run the reservation-feed worker: fetch each feed every CALENDAR_POLL_S and update its codes."""
        from .feeds.sync import run_forever, sync_due
        if once:
            t = sync_due(every=True)
            click.echo(f"feeds={t['feeds']} failed={t['failed']} created={t['created']} moved={t['moved']} "
                       f"revoked={t['revoked']}")
            sys.exit(1 if t["failed"] else 0)
        _until_interrupted("calendar worker", lambda: run_forever(tick=tick))

    @app.cli.command("automation")
    @click.option("--once", is_flag=True, help="One pass, then exit.")
    @click.option("--interval", type=float, default=None, help="Seconds between passes (AUTOMATION_TICK_S).")
    def automation_cmd(once: bool, interval: float | None):
        """Run the automation worker: online/offline events and alerts, readiness checks before arrivals."""
        from .automation import run_forever, tick
        if once:
            t = tick()
            click.echo(f"connection_changes={t['connection_changes']} not_ready={t['not_ready']}")
            return
        _until_interrupted("automation worker", lambda: run_forever(interval=interval))

    @app.cli.command("bridge")
    def bridge_cmd():
        """Run the MQTT bridge between the locks and the cloud (cloud/bridge/)."""
        from . import bridge  # imported here: the web and the mailer never load paho-mqtt

        sys.exit(bridge.main() or 0)
