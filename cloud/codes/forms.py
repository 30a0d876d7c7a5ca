"""The code form: a rental period in the property's local time and who receives the code by email."""
from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, EmailField, SelectField, StringField
from wtforms.fields import SelectChoice

from ..i18n import LOCALES
from wtforms.validators import DataRequired, Email, Length, Optional


class CodeForm(FlaskForm):
    check_in = DateTimeLocalField("Check-in (property's local time)", format="%Y-%m-%dT%H:%M",
                                  validators=[DataRequired(message="Give the check-in date and time.")])
    check_out = DateTimeLocalField("Check-out (property's local time)", format="%Y-%m-%dT%H:%M",
                                   validators=[DataRequired(message="Give the check-out date and time.")])
    customer_name = StringField("Guest name (optional)", validators=[Optional(), Length(max=120)])
    customer_email = EmailField("Guest email (optional: they get the code and how to use the keypad)",
                                validators=[Optional(), Email(check_deliverability=False), Length(max=254)])
    locale = SelectField("Guest's language", choices=[SelectChoice(k, v) for k, v in LOCALES.items()], default="en",
                         description="Of the guest's email and page.")


class GuestForm(FlaskForm):
    customer_name = StringField("Guest name", validators=[Optional(), Length(max=120)])
    customer_email = EmailField("Guest email", validators=[DataRequired(message="Give the guest's email."),
                                                           Email(check_deliverability=False), Length(max=254)])
