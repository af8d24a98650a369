"""Headless Chromium for the search page's browser tests and benchmark: Playwright driving the
browser the system installed (Debian's `chromium`, set up by setup.sh), never a downloaded one.
"""

import contextlib
import os
import shutil

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path():
    """The Chromium binary: $ZOO_CHROMIUM, else the first of CANDIDATES on PATH."""
    configured = os.environ.get("ZOO_CHROMIUM")
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise ValueError(f"ZOO_CHROMIUM={configured!r} is not an executable file.")
        return configured
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise ValueError("No Chromium found (looked for $ZOO_CHROMIUM, then "
                     f"{', '.join(CANDIDATES)} on PATH); `bash setup.sh` installs Debian's "
                     "`chromium` (as root: apt-get install chromium).")


@contextlib.contextmanager
def launch_chromium(headless=True):
    """Yield a Playwright Browser of the system Chromium; closed on exit."""
    from playwright.sync_api import sync_playwright

    arguments = ["--disable-gpu", "--disable-dev-shm-usage"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        arguments.append("--no-sandbox")  # Chromium refuses to sandbox itself as root
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=headless,
                                             args=arguments)
        try:
            yield browser
        finally:
            browser.close()
