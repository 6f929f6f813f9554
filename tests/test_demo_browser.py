"""The demo in a real browser: Debian's headless Chromium driven by Playwright uploads a digit and attacks it."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import built_once  # pytest puts tests/ on sys.path
from test_demo import EPS_255, build_tiny_bundle, running_demo

# Debian's package, never a Playwright browser download; .ci/run installs it.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
TIMEOUT_MS = 60_000

# find_spec, not importorskip: collecting this file (in every xdist worker) imports neither gradio nor Playwright.
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason="the demo needs the 'demo' extra (gradio)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="the browser test needs Playwright for Python"),
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Chromium is not installed (Debian: apt-get install "
                       "chromium); the browser test drives /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory, digits16):
    from robustcompress.apps.handler import load_demo_models

    with built_once(tmp_path_factory, "demo") as root:
        return load_demo_models(build_tiny_bundle(root, digits16))


def top_label(page, elem_id: str) -> str:
    """The headline class of a gr.Label, once the panel has one."""
    heading = page.locator(f"#{elem_id} [data-testid='label-output-value']")
    heading.wait_for(state="visible", timeout=TIMEOUT_MS)
    return heading.inner_text().strip()


def test_browser_uploads_a_picture_attacks_it_and_shows_both_models(models, tmp_path):
    from robustcompress.apps.handler import gallery_images, run_attack, upscale

    x, _ = gallery_images(models.dataset, models.input_size)
    picture = tmp_path / "digit.png"
    Image.fromarray(upscale(x[:1], 128)).save(picture)
    # The page's defaults: PGD, 10 steps, computed on the undefended model; eps starts at the bundle's training eps.
    expected = run_attack(models, picture, attack="PGD", eps_255=EPS_255, steps=10, target="undefended")

    from playwright.sync_api import sync_playwright

    with running_demo(models) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            page.locator("#attack-button").wait_for(state="visible")
            assert page.locator("#gallery img").count() == 10  # one test digit per class
            page.locator("#picture input[type='file']").set_input_files(str(picture))
            page.locator("#picture img").first.wait_for(state="visible")
            page.locator("#attack-button").click()

            assert top_label(page, "student-adv") == expected.prediction("student_adv")
            assert top_label(page, "undefended-adv") == expected.prediction("undefended_adv")
            assert top_label(page, "student-clean") == expected.prediction("student_clean")
            assert top_label(page, "undefended-clean") == expected.prediction("undefended_clean")
            assert top_label(page, "onnx-adv") == expected.prediction("onnx_adv")
            verdict = page.locator("#verdict textarea")
            page.wait_for_function("el => el.value.length > 0", arg=verdict.element_handle())
            assert verdict.input_value() == expected.verdict
            assert page.locator("#adv-image img").first.is_visible()
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000
