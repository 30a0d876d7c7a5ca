"""Forms of sign-up, log-in, password reset and change, staff invitations and roles (CSRF by Flask-WTF)."""
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField
from wtforms.fields import SelectChoice
from wtforms.validators import DataRequired, Email, EqualTo, Length, Optional, ValidationError

from .passwords import MAX_LENGTH, password_problem
from .roles import ROLE_LABELS


ASSIGNABLE_ROLES = [SelectChoice(r, ROLE_LABELS[r]) for r in ("staff", "manager")]


class StrongPassword:
    """Refuses short and easily guessed passwords (auth/passwords.py); the form's `personal` values (email,
    names) count as easy guesses."""

    def __call__(self, form, field):
        problem = password_problem(field.data or "", *getattr(form, "personal", ()))
        if problem:
            raise ValidationError(problem)


class SignupForm(FlaskForm):
    agency_name = StringField("Agency name", validators=[DataRequired(), Length(max=120)])
    email = EmailField("Your email", validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)],
                       description="We send a link there to finish creating your agency.")


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_LENGTH)])


class ForgotForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False)])


class ResetForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired(), StrongPassword()],
                             description="At least 8 characters, not a common password.")
    confirm = PasswordField("Repeat it", validators=[DataRequired(), EqualTo("password", "The two differ.")])

    def __init__(self, *args, personal=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.personal = tuple(personal)


class ChangePasswordForm(ResetForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=MAX_LENGTH)])


class InviteForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)])
    name = StringField("Name", validators=[Optional(), Length(max=120)])
    role = SelectField("Role", choices=ASSIGNABLE_ROLES, default="staff")


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=ASSIGNABLE_ROLES)
