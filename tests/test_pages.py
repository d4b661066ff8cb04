"""Static pages: built offline, checked in headless Chromium (skipped where no chromium is installed)."""

import pytest

from cmcr.pages import check_page, figure, find_chromium, page

needs_browser = pytest.mark.skipif(find_chromium() is None, reason="no chromium on PATH (apt-get install chromium)")


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
