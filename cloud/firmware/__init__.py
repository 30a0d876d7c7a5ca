"""Over-the-air firmware updates, cloud side: `flask --app cloud firmware keygen|build|rollout`; release
format and signing in release.py, rollouts and the bridge's handling in rollout.py (docs/ota.md)."""
from __future__ import annotations

from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from .release import ReleaseError

cli = AppGroup("firmware", help="Release keys, signed firmware bundles and rollouts (docs/ota.md).")

ROOT = Path(__file__).resolve().parents[2]


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc))


@cli.command("keygen")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="File for the key pair (created 0600; never overwritten). Keep it off the database host.")
def keygen(out: Path) -> None:
    """Make the release key pair. Point FIRMWARE_SIGNING_KEY at the file."""
    from .release import write_key

    try:
        pub = write_key(out)
    except ReleaseError as exc:
        _fail(exc)
    click.echo(f"release key written to {out}")
    click.echo(f"public key: {pub}")
    click.echo(f"set FIRMWARE_SIGNING_KEY={out.resolve()} for `firmware build` and for the web (provisioning "
               f"gives every lock the public key)")


@cli.command("build")
@click.option("--version", "version", required=True, help="The release's version, e.g. 0.2.0 (higher than the fleet's).")
@click.option("--device-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=ROOT / "device", show_default="device/", help="The firmware sources to bundle.")
@click.option("--target", type=click.Choice(["esp32", "host"]), default="esp32", show_default=True,
              help="esp32 (mpy-cross -march=xtensawin) or host (the simulator's MicroPython unix port).")
@click.option("--allow-downgrade", is_flag=True, help="Let the release replace a higher version.")
def build(version: str, device_dir: Path, target: str, allow_downgrade: bool) -> None:
    """Compile, bundle and sign the firmware, and store the release."""
    from .release import DOWNGRADE, compile_bundle, load_key, pack, parse_version, sign
    from .rollout import save_release

    try:
        parse_version(version)
        key = load_key(current_app.config.get("FIRMWARE_SIGNING_KEY"))
        files = compile_bundle(device_dir, version, target)
        signed = sign(key, version, target, pack(files), DOWNGRADE if allow_downgrade else 0)
        rel = save_release(signed)
    except ReleaseError as exc:
        _fail(exc)
    click.echo(f"release {rel.version} ({rel.target}): {len(files)} files, {rel.size} bytes, "
               f"sha256 {rel.sha256[:16]}…, signed")


@cli.command("rollout")
@click.option("--version", "version", required=True)
@click.option("--target", type=click.Choice(["esp32", "host"]), default=None)
@click.option("--lock", "locks", multiple=True, help="A lock id (repeat for several).")
@click.option("--agency", "agency", type=int, default=None, help="Every lock of this agency.")
@click.option("--percent", type=float, default=None, help="A stable share of the whole fleet, e.g. 10.")
@click.option("--halt-share", type=float, default=0.2, show_default=True,
              help="Halt the rollout when more than this share of its locks rolled back.")
def rollout_cmd(version, target, locks, agency, percent, halt_share) -> None:
    """Send a release to locks; each fetches it at its next hello."""
    from .. import models
    from ..models import canonical_mac
    from .rollout import find_release, start_rollout

    try:
        ids = None
        if locks:
            try:
                ids = [canonical_mac(x) for x in locks]
            except models.InvalidMac as exc:
                raise ReleaseError(str(exc))
        rel = find_release(version, target)
        ro, targeted = start_rollout(rel, lock_ids=ids, agency_id=agency, percent=percent,
                                     halt_share=halt_share)
    except ReleaseError as exc:
        _fail(exc)
    click.echo(f"rollout {ro.id}: {rel.version} to {len(targeted)} lock(s) ({ro.scope}); halts above "
               f"{ro.max_rollback_share:.0%} rollbacks")
    for lid in targeted:
        click.echo(f"  {lid}")
