"""Static pages: built offline, checked in headless Chromium (skipped where no chromium is installed, except
under CI=true, where a missing browser fails: see conftest.have_browser)."""

import pytest

from cmcr.pages import check_page, figure, page

needs_browser = pytest.mark.usefixtures("chromium")


def test_page_is_self_contained():
    text = page("T <1>", figure("a b.png", "x & y", width=10))
    assert "T &lt;1&gt;" in text and 'src="a b.png"' in text and "x &amp; y" in text
    assert "http" not in text.lower()  # no CDN, no remote font: nothing to fetch


@needs_browser
def test_browser_check_counts_broken_images_and_console_errors(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 20, 20)).save(tmp_path / "a.png")
    (tmp_path / "good.html").write_text(page("good", figure("a.png", "red")))
    good = check_page(tmp_path / "good.html", screenshot=tmp_path / "good.png")
    assert (good.images_ok, good.images, good.console_errors, good.ok) == (1, 1, [], True)
    assert good.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "bad.html").write_text(page("bad", figure("a.png", "red") + figure("missing.png", "gone")
                                            + '<img src="https://example.com/x.png"><script>notDefined()</script>'))
    bad = check_page(tmp_path / "bad.html")
    assert (bad.images_ok, bad.images) == (1, 3) and not bad.ok  # the remote image is blocked: no network
    assert any("notDefined" in e for e in bad.console_errors)


def test_under_ci_a_missing_browser_fails_instead_of_skipping(tmp_path):
    """Issue 23, point 5: CI had no Chromium, so no CI run ever opened a page. Under CI=true the page checks now
    fail without a browser (and .ci/run installs Debian's chromium)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    test = tmp_path / "test_one.py"
    test.write_text("from conftest import have_browser\n\ndef test_x():\n    assert have_browser()\n")
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PATH": str(tmp_path)}  # no chromium on this PATH
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)]
    ci = subprocess.run(cmd, cwd=tmp_path, env=env | {"CI": "true"}, capture_output=True, text=True)
    assert ci.returncode == 1 and "CI=true but no chromium on PATH" in ci.stdout, ci.stdout
    local = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert local.returncode == 1 and "1 failed" in local.stdout  # have_browser() is False: the test's own assert
    ci_script = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert "export CI=true" in ci_script and "apt-get install" in ci_script and "chromium" in ci_script
