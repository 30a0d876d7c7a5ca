from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, EmailField, StringField
from wtforms.validators import DataRequired, Email, Length, Optional


class CodeForm(FlaskForm):
    check_in = DateTimeLocalField("Check-in (property's local time)", format="%Y-%m-%dT%H:%M",
                                  validators=[DataRequired(message="Give the check-in date and time.")])
    check_out = DateTimeLocalField("Check-out (property's local time)", format="%Y-%m-%dT%H:%M",
                                   validators=[DataRequired(message="Give the check-out date and time.")])
    customer_name = StringField("Customer name (optional)", validators=[Optional(), Length(max=120)])
    customer_email = EmailField("Customer email (optional: they get a copy)",
                                validators=[Optional(), Email(check_deliverability=False), Length(max=254)])
