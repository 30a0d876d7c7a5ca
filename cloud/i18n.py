"""Languages for what guests read (their email and their page): English and French, chosen per code.
Staff pages are in English. Catalogs: cloud/translations/<lang>/LC_MESSAGES/messages.po (+ the compiled .mo,
rebuilt with `make translations`)."""
from __future__ import annotations

from contextlib import contextmanager

from flask import g
from flask_babel import Babel, force_locale

LOCALES = {"en": "English", "fr": "Français"}

babel = Babel()


def _select_locale() -> str:
    return g.get("guest_locale") or "en"


def init_app(app) -> None:
    babel.init_app(app, locale_selector=_select_locale, default_translation_directories="translations")


@contextmanager
def guest_locale(locale: str):
    """Render mails in `locale` (the guest's), whatever the request's language."""
    with force_locale(locale if locale in LOCALES else "en"):
        yield


def guest_link(code) -> str:
    from .guest import guest_link as link
    return link(code)
