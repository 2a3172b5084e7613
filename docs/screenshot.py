"""Makes docs/report.png, the README's picture of `p11spy report`: `python docs/screenshot.py`.

The page is the report of fixtures/p11spy/real-card-wrong-pin.p11 (pkcs11-tool with a wrong PIN
on the card station's virtual PIV card), opened in Debian's chromium by playwright as the tests
do, with the first failure clicked.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "fixtures" / "p11spy" / "real-card-wrong-pin.p11"
OUT = REPO / "docs" / "report.png"


def main() -> int:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "real-card-wrong-pin.html"
        subprocess.run([sys.executable, "-m", "p11spy.cli.main", "report", str(TRACE), "-o",
                        str(page_path)], check=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(page_path.as_uri())
            page.wait_for_selector("body[data-ready='1']")
            page.click("#first-failure")
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(OUT), full_page=True,
                            clip={"x": 0, "y": 0, "width": 1400, "height": 1700})
            browser.close()
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
