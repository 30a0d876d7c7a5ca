"""Debian's Chromium, headless, as every browser test drives it through Playwright (never `playwright install`)."""
import os
import shutil

CHROMIUM = os.environ.get("KEYDROP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
