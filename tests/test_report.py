"""report.html: one self-contained page per benchmark, rendered in a real browser (headless Chromium)."""
import json
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
    assert "Protocol: " in page and "<th>D steps</th>" in page and "wgan-gp.lambda=10" in page  # how rows differ
    assert "ValueError: a bug in this plugin" in page  # the failed cell with its error
    assert page.count("data:image/png;base64,") == 2 + 2  # curves, losses, and a grid per completed variant


@pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed (.ci/run installs it)")
def test_report_renders_in_a_browser(report, tmp_path):
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(command + ["--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<table" in html and 'class="dataframe leaderboard ' in html and 'class="dataframe failed"' in html
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


# ---- what a reader sees at 1280 pixels: no overflow, scores first, no number broken over two lines ----

MEASURE = """<script>
window.addEventListener('load', () => {
  const lines = el => { const r = document.createRange(); r.selectNodeContents(el);
                        return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size; };
  const cells = [...document.querySelectorAll('table.leaderboard td, table.training td')];
  document.body.setAttribute('data-layout', JSON.stringify({
    page: document.documentElement.scrollWidth, window: window.innerWidth,
    tables: [...document.querySelectorAll('table.leaderboard, table.training')].map(
      t => [t.className, t.parentElement.scrollWidth, t.parentElement.clientWidth]),
    wrapped: cells.filter(td => /±|\\[\\d/.test(td.textContent) && lines(td) > 1)
                  .map(td => td.textContent),
    headers: [...document.querySelectorAll('table.leaderboard th')].map(th => th.textContent),
    grid_rows: new Set([...document.querySelectorAll('.grids figure')].map(
      f => Math.round(f.getBoundingClientRect().top))).size,
    grid_right: Math.max(0, ...[...document.querySelectorAll('.grids img')].map(i => i.getBoundingClientRect().right)),
  }));
});
</script>"""


def layout_at(page, tmp_path, width=1280):
    """Where things land in headless Chromium at `width` pixels (a measuring script added to a copy)."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--window-size={width},900", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'data-layout="([^"]*)"', dom.stdout)
    assert found, dom.stdout[-2000:]
    import html

    return json.loads(html.unescape(found.group(1)))


def assert_fits(layout):
    assert layout["page"] <= layout["window"], layout  # no horizontal scroll of the page
    for name, scrolled, shown in layout["tables"]:
        assert scrolled <= shown, (name, layout)  # nor inside a table (recall cut off behind a scroll bar)
    assert layout["wrapped"] == [], layout  # "4.57 ± 0.05" on one line
    assert layout["headers"][:3] == ["variant", "seeds", "FID"], layout  # scores first


@pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed (.ci/run installs it)")
def test_report_fits_a_laptop_screen(report, tmp_path):
    layout = layout_at(report, tmp_path)
    assert_fits(layout)
    assert "D steps" not in layout["headers"] and layout["headers"][-1] == "status"  # the recipe after the scores


@pytest.fixture
def big_report(tmp_path, tiny_run):
    """report.html of a ten-variant grid, three seeds each, with differing recipes and options (no training:
    stored records, and every sample grid drawn from one small run)."""
    from test_leaderboard import make_store, record

    from ganzoo.leaderboard import leaderboard, per_seed
    from ganzoo.report import write_html_report

    names = ["vanilla", "minimax", "lsgan", "feature-matching", "hinge", "wgan", "wgan-gp", "r1", "dragan",
             "a-third-party-variant"]
    records = [record("real", "real data", 0, 4.17, is_mean=9.59, kid=-3.141, precision=0.903, recall=0.902),
               record("untrained", "untrained generator", 0, 1614.18, is_mean=1.0, kid=824.5, precision=1.0,
                      recall=0.0)]
    for i, name in enumerate(names):
        critic = name.startswith("wgan")
        for seed in range(3):
            records.append(record(
                "run", name, seed, 100.0 * (i + 1) + 37.3 * seed, is_mean=2.0 + 0.1 * seed, kid=123.4 + seed,
                precision=0.7, recall=0.3 + 0.01 * seed, run=str(tiny_run.path), d_steps=5 if critic else 1,
                optimizer="rmsprop" if name == "wgan" else "adam", lr=5e-5 if name == "wgan" else 2e-4,
                beta1=None if name == "wgan" else 0.5, beta2=None if name == "wgan" else 0.999,
                g_images_per_s=1234.5, d_images_per_s=6172.5 if critic else 1234.5,
                **({f"option.variant.{name}.lambda": 10.0, f"option.variant.{name}.scale": 0.5}
                   if name in ("wgan-gp", "dragan", "r1") else {}),
                **{"option.arch.mlp.width": 512}))
    folder = make_store(tmp_path / "big", records)
    board = leaderboard(folder)
    return write_html_report(folder, board, per_seed(folder), "ganzoo bench --variants all", {})


@pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed (.ci/run installs it)")
def test_a_ten_variant_report_fits_a_laptop_screen(big_report, tmp_path):
    page = big_report.read_text()
    assert re.search(r"<td>\[\d+\.\d\d, \d+\.\d\d\]</td>", page)  # three seeds: an interval
    layout = layout_at(big_report, tmp_path)
    assert_fits(layout)
    assert layout["grid_rows"] >= 2 and layout["grid_right"] <= layout["window"]  # ten grids in rows, not a strip


def test_sample_grids_are_laid_out_in_rows_that_fit_a_page(tmp_path, tiny_run):
    """samples.png of ten variants: a block of panels, not a 2750 x 329 strip."""
    import pandas as pd
    from PIL import Image

    from ganzoo import plots

    runs = pd.DataFrame({"label": [f"variant-{i} / mlp / mnist5k" for i in range(10)], "seed": 0,
                         "status": "completed", "run": str(tiny_run.path)})
    path = plots.samples(tmp_path, runs)
    width, height = Image.open(path).size
    assert width <= 1500 and height >= 0.6 * width, (width, height)
    assert plots.panel_layout(10) == (3, 4) and plots.panel_layout(3) == (1, 3)


def test_losses_give_every_variant_its_own_colour(tmp_path, monkeypatch):
    """Past ten variants matplotlib's cycle starts over; losses.png must not draw two variants alike."""
    import pandas as pd

    from ganzoo import plots

    assert all(len(set(map(str, plots.distinct_colours(n)))) == n for n in (1, 10, 11, 20, 21, 40))
    labels = [f"variant-{i:02d} / mlp / mnist5k" for i in range(14)]
    for i, label in enumerate(labels):
        run = tmp_path / f"run{i}"
        run.mkdir()
        log = pd.DataFrame({"step": range(1, 6), "d_loss": 1.0 + i, "g_loss": 0.5, "d_real": 0.6, "d_fake": 0.4,
                            "time_s": 0.1})
        log.to_csv(run / "log.csv", index=False)
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    plots.losses(tmp_path, pd.DataFrame({"label": labels, "run": [f"run{i}" for i in range(14)]}))
    lines = drawn["fig"].axes[0].get_lines()  # discriminator losses: one line per variant
    assert len(lines) == 14 and len({str(line.get_color()) for line in lines}) == 14
