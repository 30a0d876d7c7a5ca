"""Lock registry forms: register a lock by its MAC, edit it; EmptyForm carries the CSRF token of POST buttons."""
from flask_wtf import FlaskForm
from wtforms import StringField, TextAreaField, TimeField
from wtforms.validators import DataRequired, Length, ValidationError

from ..models import InvalidMac, canonical_mac
from ..timeutil import DEFAULT_TIMEZONE, is_valid_zone


class LockForm(FlaskForm):
    mac = StringField("MAC address", validators=[DataRequired(), Length(max=40)],
                      description="As printed on the board or shown by the installer: AA:BB:CC:DD:EE:FF")
    name = StringField("Name", validators=[DataRequired(), Length(max=120)],
                       description="How your team calls it, e.g. “Rue Oberkampf, 3rd floor”")
    address = TextAreaField("Property address", validators=[DataRequired(), Length(max=500)])
    timezone = StringField("Time zone", validators=[DataRequired(), Length(max=64)], default=DEFAULT_TIMEZONE,
                           description="IANA name, e.g. Europe/Paris, America/New_York")

    def validate_mac(self, field):
        try:
            canonical_mac(field.data)
        except InvalidMac as exc:
            raise ValidationError(str(exc))

    def validate_timezone(self, field):
        if not is_valid_zone(field.data.strip()):
            raise ValidationError("Unknown time zone; use an IANA name such as Europe/Paris.")


class LockEditForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    address = TextAreaField("Property address", validators=[DataRequired(), Length(max=500)])
    timezone = StringField("Time zone", validators=[DataRequired(), Length(max=64)],
                           description="IANA name, e.g. Europe/Paris, America/New_York")
    checkin_time = TimeField("Usual check-in time", validators=[DataRequired(message="Give a time, like 15:00.")],
                             description="Proposed for new codes and used for stays from a booking calendar.")
    checkout_time = TimeField("Usual check-out time", validators=[DataRequired(message="Give a time, like 11:00.")])

    def validate_timezone(self, field):
        if not is_valid_zone(field.data.strip()):
            raise ValidationError("Unknown time zone; use an IANA name such as Europe/Paris.")


class EmptyForm(FlaskForm):
    """POST-only buttons (reveal, revoke, logout) still carry a CSRF token."""
