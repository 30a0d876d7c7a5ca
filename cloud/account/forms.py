"""The account page's forms: one's own name, and a new API token's label."""
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length, Optional


class NameForm(FlaskForm):
    name = StringField("Your name", validators=[Optional(), Length(max=120)],
                       description="Shown to your colleagues and in the history.")


class TokenForm(FlaskForm):
    label = StringField("Label", validators=[DataRequired(message="Give the token a label."), Length(max=80)],
                        description="What uses it, e.g. “installer laptop” or “booking sync”.")
