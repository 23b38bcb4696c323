"""report.html: one self-contained page per benchmark, rendered in a real browser (headless Chromium)."""
import re
import shutil
import subprocess

import pytest

from ganzoo.hookspecs import hookimpl
from ganzoo.specs import VariantSpec
from ganzoo_plugins.vanilla import bce_discriminator_loss

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


class Buggy:
    @hookimpl
    def ganzoo_variants(self):
        def g_loss(fake, real=None):
            raise ValueError("a bug in this plugin")

        return [VariantSpec(name="buggy", description="raises", discriminator_loss=bce_discriminator_loss,
                            generator_loss=g_loss)]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A small benchmark with a completed critic, a penalised variant and a failing one."""
    from ganzoo.cli import main
    from ganzoo.plugins import get_plugin_manager

    out = tmp_path_factory.mktemp("report") / "bench"
    plugin = Buggy()
    get_plugin_manager().register(plugin, name="buggy-plugin")
    try:
        code = main(["bench", "--variants", "vanilla,wgan-gp,buggy", "--seeds", "0", "--steps", "40",
                     "--eval-every", "20", "--n-fake", "300", "--out", str(out), "--quiet"])
    finally:
        get_plugin_manager().unregister(plugin)
    assert code == 1  # one cell failed
    return out / "report.html"


def test_report_is_self_contained_and_complete(report):
    page = report.read_text()
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from anywhere
    assert "ganzoo bench --variants vanilla,wgan-gp,buggy --seeds 0 --steps 40" in page  # the command
    assert "Protocol: " in page and "<th>D steps</th>" in page and "<th>lambda</th>" in page  # how rows differ
    assert "ValueError: a bug in this plugin" in page  # the failed cell with its error
    assert page.count("data:image/png;base64,") == 2 + 2  # curves, losses, and a grid per completed variant


@pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed (.ci/run installs it)")
def test_report_renders_in_a_browser(report, tmp_path):
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(command + ["--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<table" in html and 'class="dataframe leaderboard"' in html and 'class="dataframe failed"' in html
    for row in ("real data", "vanilla", "wgan-gp", "buggy", "untrained generator"):
        assert f"<td>{row}</td>" in html, row
    assert len(re.findall(r"<img ", html)) == 4

    shot = tmp_path / "report.png"
    done = subprocess.run(command + ["--window-size=1300,2000", f"--screenshot={shot}", report.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    from PIL import Image

    pixels = Image.open(shot).convert("L")
    histogram = pixels.histogram()
    not_white = 1 - histogram[255] / sum(histogram)
    assert not_white > 0.05  # text, tables and figures, not a blank page
    assert len([count for count in histogram if count]) > 50  # many shades: the figures were drawn
