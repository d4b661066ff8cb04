"""Static HTML pages that work with no server and no network, and a headless-browser check of them.

Pages reference only files beside them (relative paths) or embed what they show; they carry a small
inline script that, once the page has loaded, marks ``<body data-images-ok="N/M">`` with how many of its
images decoded — which :func:`check_page` reads back from a headless Chromium, together with the
console's errors, so "the page loaded its images" is checked, not assumed.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: marks the body with how many images decoded (naturalWidth > 0) of how many there are
IMAGE_CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-ok", ok + "/" + imgs.length);
});
</script>"""

PAGE_STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; border: 1px solid #ddd; }
.small { font-size: 0.85em; color: #555; }
</style>"""


def page(title: str, body: str) -> str:
    """A complete, self-contained HTML document (UTF-8, inline style, the image check script)."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}</title>\n"
            f"{PAGE_STYLE}\n{IMAGE_CHECK_SCRIPT}\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n")


def figure(src: str, caption: str, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}"{size}>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def find_chromium() -> str | None:
    """The headless browser to check pages with (Debian's ``chromium``, or Chrome), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageCheck:
    images_ok: int
    images: int
    console_errors: list[str]
    screenshot: Path | None

    @property
    def ok(self) -> bool:
        return self.images_ok == self.images and not self.console_errors


def check_page(path: str | Path, screenshot: str | Path | None = None, browser: str | None = None,
               timeout: float = 60.0, size: tuple[int, int] = (1200, 900)) -> PageCheck:
    """Open ``path`` in headless Chromium with the network off: count decoded images (the page's own
    ``data-images-ok`` mark), collect console errors, optionally save a PNG screenshot."""
    browser = browser or find_chromium()
    if browser is None:
        raise FileNotFoundError("no chromium / chrome on PATH (Debian: apt-get install chromium)")
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such page")
    url = path.as_uri()
    base = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # no network: any fetch fails
            "--allow-file-access-from-files", "--virtual-time-budget=5000", f"--window-size={size[0]},{size[1]}"]
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(base + [f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                                     "--dump-dom", url], capture_output=True, text=True, timeout=timeout)
    mark = re.search(r'data-images-ok="(\d+)/(\d+)"', dom.stdout)
    if mark is None:
        raise RuntimeError(f"{path}: the page did not finish loading in the browser (no image mark); "
                           f"stderr: {dom.stderr[-500:]}")
    errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)]
    errors += [line for line in dom.stderr.splitlines() if "Failed to load resource" in line]
    shot = None
    if screenshot is not None:
        shot = Path(screenshot).resolve()
        shot.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(base + [f"--user-data-dir={profile}", f"--screenshot={shot}", url], capture_output=True,
                           text=True, timeout=timeout)
        if not shot.is_file():
            raise RuntimeError(f"{path}: no screenshot written to {shot}")
    return PageCheck(int(mark.group(1)), int(mark.group(2)), errors, shot)
