"""The Gradio demo: the attack handler called directly, picture handling, the CLI, a launched server via gradio_client,
and the page in a real browser (Debian's headless Chromium driven by Playwright). One file, so one xdist worker
imports gradio and builds the demo's models."""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import shutil
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import built_once, foreign_onnx, never, one_line, png_claiming
from robustcompress.apps.handler import (
    ATTACKS,
    MAX_PIXELS,
    DemoModels,
    compare_models,
    gallery_images,
    image_to_tensor,
    load_demo_models,
    run_attack,
    upscale,
)
from robustcompress.cli import main

# find_spec, not importorskip: every xdist worker collects this file, and importing gradio there costs 3-5 s each.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("gradio") is None,
                                reason="the demo needs the 'demo' extra (gradio)")

# The bundle is trained for 16/255 (as the quickstart's is): at 8/255 even a standard digits model mostly holds.
EPS_255 = 16.0
TINY_MODEL = "test_efficientnet"  # timm's 0.1M-parameter test network: 94% on 16 px digits after 3 epochs


def build_tiny_bundle(root: Path, data) -> Path:
    """A standard model and a robust copy of it (one epoch of fast PGD-AT fine-tuning), saved with its ONNX export.

    Fine-tuning the standard model adversarially makes a robust student in a fraction of the time training one
    from scratch takes. Built once per run under ``root``; a second caller (the browser test) finds it on disk.
    """
    from robustcompress import RobustCompressor, train_teacher

    bundle = root / "bundle"
    if (bundle / "config.json").is_file() and (root / "student.onnx").is_file():
        return bundle
    undefended = train_teacher(TINY_MODEL, data, epochs=3, lr=0.05, batch_size=64, seed=0, progress=False)
    eps = EPS_255 / 255
    rc = RobustCompressor(
        [undefended], copy.deepcopy(undefended), method="pgd-at", eps=eps, steps=1, step_size=1.25 * eps, epochs=1,
        batch_size=64, lr=0.02, device="cpu", seed=0, verify_attacks=("pgd10",), verify_examples=64, progress=False,
    )
    rc.fit(data)
    rc.save(bundle)
    rc.export_onnx(root / "student.onnx")
    return bundle


@contextlib.contextmanager
def running_demo(models: DemoModels) -> Iterator[str]:
    """Serve the demo on a free local port for the duration of the block; yields its URL."""
    from robustcompress.apps.demo import build_app, serve

    app = serve(build_app(models), host="127.0.0.1", port=None, block=False, quiet=True)
    try:
        yield app.local_url
    finally:
        app.close()


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory, digits16) -> Path:
    with built_once(tmp_path_factory, "demo") as root:
        return build_tiny_bundle(root, digits16)


@pytest.fixture(scope="module")
def models(demo_bundle) -> DemoModels:
    return load_demo_models(demo_bundle)


@pytest.fixture(scope="module")
def labelled_batch(models):
    """Five held-out test images per digit with their labels."""
    return gallery_images(models.dataset, models.input_size, per_class=5, limit=50)


# -- the handler -----------------------------------------------------------------------------------------------
def test_bundle_loads_with_student_undefended_model_onnx_and_numbers(models):
    assert models.student.name == TINY_MODEL and models.undefended_name == TINY_MODEL
    assert models.class_names == [str(i) for i in range(10)] and models.input_size == 16
    assert models.onnx_path.name == "student.onnx" and models.onnx_path.parent == models.bundle_dir.parent
    assert set(models.metrics["robust_acc"]) == {"pgd10"} and 0 <= models.metrics["clean_acc"] <= 1


@pytest.mark.parametrize(
    "attack, target",
    # APGD-CE runs 100 iterations; once, on the model it reliably breaks, keeps the test quick.
    [("FGSM", "student"), ("PGD", "student"), ("FGSM", "undefended"), ("PGD", "undefended"), ("APGD-CE", "undefended")],
)
def test_adversarial_image_stays_within_eps_and_in_image_range(models, labelled_batch, attack, target):
    x, _ = labelled_batch
    result = run_attack(models, x[3], attack=attack, eps_255=EPS_255, steps=5, target=target)
    assert torch.equal(result.x_clean, x[3:4])
    delta = result.x_adv - result.x_clean
    assert delta.abs().max() <= EPS_255 / 255 + 1e-6
    assert delta.abs().max() > 0.5 / 255, "the attack did not move the image at all"
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    for key in ("student_clean", "student_adv", "undefended_clean", "undefended_adv", "onnx_adv"):
        assert result.probs[key].shape == (10,) and abs(float(result.probs[key].sum()) - 1) < 1e-4
    assert len(result.top_k("student_adv")) == 3


@pytest.mark.parametrize("attack", ATTACKS)
def test_eps_zero_leaves_image_and_predictions_unchanged(models, labelled_batch, attack):
    x, _ = labelled_batch
    result = run_attack(models, x[5], attack=attack, eps_255=0, steps=5)
    assert torch.equal(result.x_adv, result.x_clean)
    assert not result.student_flipped and not result.undefended_flipped
    assert torch.allclose(result.probs["student_adv"], result.probs["student_clean"], atol=1e-6)
    assert result.prediction("onnx_adv") == result.prediction("student_clean")
    assert "kept" in result.verdict and "flipped" not in result.verdict


def test_pgd_flips_the_undefended_model_more_often_than_the_robust_student(models, labelled_batch):
    x, y = labelled_batch
    fooled = {}
    for target in ("student", "undefended"):
        _, probs = compare_models(models, x, attack="PGD", eps_255=EPS_255, steps=10, target=target)
        correct = probs[f"{target}_clean"].argmax(1) == y
        fooled[target] = int((correct & (probs[f"{target}_adv"].argmax(1) != y)).sum())
    # White-box PGD at 16/255 breaks the standard model on most digits (about 70% of 100 test images when this
    # test was written); the adversarially fine-tuned student on about half as many.
    assert fooled["undefended"] >= 0.5 * len(x), fooled
    assert fooled["student"] <= fooled["undefended"] - 0.15 * len(x), fooled


def test_onnx_student_agrees_with_pytorch_on_the_adversarial_image(models, labelled_batch):
    x, _ = labelled_batch
    result = run_attack(models, x[0], attack="FGSM", eps_255=EPS_255)
    assert torch.allclose(result.probs["onnx_adv"], result.probs["student_adv"], atol=1e-4)
    assert "as in PyTorch" in result.verdict


def test_same_request_gives_the_same_adversarial_image(models, labelled_batch):
    x, _ = labelled_batch
    first = run_attack(models, x[1], attack="PGD", eps_255=EPS_255, steps=3)
    second = run_attack(models, x[1], attack="PGD", eps_255=EPS_255, steps=3)
    assert torch.equal(first.x_adv, second.x_adv)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(eps_255=17), "eps must be between 0 and 16"),
        (dict(eps_255=-1), "eps must be between 0 and 16"),
        (dict(eps_255="a lot"), "eps must be a number"),
        (dict(steps=0), "steps must be between 1 and 100"),
        (dict(steps=500), "steps must be between 1 and 100"),
        (dict(steps=2.5), "steps must be a whole number"),
        (dict(attack="CW"), "unknown attack 'CW'"),
        (dict(target="teacher7"), "unknown attack target"),
    ],
)
def test_settings_outside_the_allowed_range_are_refused(models, labelled_batch, kwargs, message):
    x, _ = labelled_batch
    with pytest.raises(ValueError, match=message):
        run_attack(models, x[0], **kwargs)


# -- pictures of every kind ------------------------------------------------------------------------------------------
def test_upscaled_gallery_picture_maps_back_to_the_exact_quantised_test_image(models, labelled_batch):
    x, _ = labelled_batch
    picture = Image.fromarray(upscale(x[2:3], 128))
    assert picture.size == (128, 128)
    tensor, notes = image_to_tensor(picture, 16)
    assert notes == [] and (tensor - x[2:3]).abs().max() <= 0.5 / 255 + 1e-6


def test_greyscale_palette_rgba_and_16_bit_pictures_become_rgb_inputs(tmp_path):
    grey = Image.fromarray(np.full((20, 20), 128, np.uint8), "L")
    x, _ = image_to_tensor(grey, 16)
    assert x.shape == (1, 3, 16, 16) and torch.allclose(x, torch.full_like(x, 128 / 255))

    x, _ = image_to_tensor(grey.convert("P"), 16)
    assert torch.allclose(x, torch.full_like(x, 128 / 255), atol=1 / 255)

    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    rgba[:8, :, 3] = 0  # top half transparent
    x, notes = image_to_tensor(Image.fromarray(rgba, "RGBA"), 16)
    assert any("transparent" in n for n in notes)
    assert x[0, 0, :8].max() == 0 and x[0, 0, 8:].min() == 1 and x[0, 1:].max() == 0

    sixteen = tmp_path / "deep.png"
    Image.fromarray(np.full((16, 16), 65535 // 2, np.uint16)).save(sixteen)
    assert Image.open(sixteen).mode.startswith("I")
    x, _ = image_to_tensor(str(sixteen), 16)
    # Every picture becomes 8-bit RGB (the one rule of robustcompress_runtime.images), so 0.5 is its nearest k/255.
    assert torch.allclose(x, torch.full_like(x, 0.5), atol=0.5 / 255 + 1e-6)


def test_large_pictures_are_cropped_and_resized_and_absurd_ones_refused(tmp_path):
    x, notes = image_to_tensor(Image.new("RGB", (3000, 2000), (255, 0, 0)), 16)
    assert x.shape == (1, 3, 16, 16) and x[0, 0].min() == 1 and x[0, 1:].max() == 0
    assert notes == ["cropped the 3000x2000 image to its central 2000x2000 square"]

    huge = tmp_path / "huge.png"
    Image.new("1", (8000, 6000)).save(huge)  # compresses to a few kB, decodes to 48 megapixels
    assert 8000 * 6000 > MAX_PIXELS
    with pytest.raises(ValueError, match="megapixels"):
        image_to_tensor(str(huge), 16)


def test_files_that_are_not_pictures_are_refused_with_a_reason(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(ValueError, match="not an image file"):
        image_to_tensor(str(text), 16)
    with pytest.raises(ValueError, match="no image"):
        image_to_tensor(None, 16)


# -- bundles and the CLI ----------------------------------------------------------------------------------------------
def test_missing_bundle_is_a_clear_error(tmp_path, capsys):
    from robustcompress.cli import main

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_demo_models(tmp_path / "nowhere")
    assert main(["demo", str(tmp_path / "nowhere"), "--port", "7999"]) == 2
    err = capsys.readouterr().err
    assert "bundle folder" in err and "does not exist" in err and "Traceback" not in err


def test_demo_command_runs_the_quickstart_first_when_its_bundle_is_missing(tmp_path, monkeypatch, demo_bundle):
    import shutil

    import robustcompress.apps.demo
    import robustcompress.quickstart
    from robustcompress.cli import main

    built, served = [], []

    def fake_quickstart(out_dir, device="auto", progress=True, **overrides):
        built.append((str(out_dir), progress))
        shutil.copytree(demo_bundle.parent, out_dir)
        return {}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(robustcompress.quickstart, "run_quickstart", fake_quickstart)
    monkeypatch.setattr(robustcompress.apps.demo, "serve", lambda app, host, port: served.append((type(app).__name__, host, port)))
    assert main(["demo", "--port", "7861"]) == 0
    assert built == [("quickstart_out", True)] and served == [("Blocks", "127.0.0.1", 7861)]
    assert main(["demo", "--host", "0.0.0.0"]) == 0  # the bundle now exists: no second quickstart
    assert len(built) == 1 and served[-1] == ("Blocks", "0.0.0.0", 7860)


def test_report_plot_and_numbers_are_shown(tmp_path, demo_bundle):
    import shutil

    from robustcompress.apps.demo import build_app, robustness_markdown

    root = shutil.copytree(demo_bundle.parent, tmp_path / "run")
    Image.new("RGB", (40, 30), "white").save(root / "accuracy_vs_eps.png")
    Image.new("RGB", (40, 30), "black").save(root / "loss_curve.png")
    models = load_demo_models(root / "bundle")
    assert models.plot_path == root / "accuracy_vs_eps.png" and models.onnx_path == root / "student.onnx"
    text = robustness_markdown(models)
    assert "| pgd10 |" in text and f"{100 * models.metrics['clean_acc']:.1f}%" in text
    config = build_app(models).get_config_file()
    plots = [c for c in config["components"] if c.get("props", {}).get("elem_id") == "eps-plot"]
    assert len(plots) == 1 and plots[0]["props"]["value"]["path"].endswith(".png")


@pytest.mark.slow  # a second ONNX export
def test_bundle_without_onnx_gets_exported_student(tmp_path, demo_bundle):
    import shutil

    copy = shutil.copytree(demo_bundle, tmp_path / "alone" / "bundle")
    models = load_demo_models(copy)
    assert models.onnx_path.is_file() and models.onnx_path.parent != copy.parent


# -- end to end over HTTP ---------------------------------------------------------------------------------------------
def test_launched_server_answers_an_attack_and_reports_bad_input(models, labelled_batch, tmp_path):
    from gradio_client import Client, handle_file

    x, _ = labelled_batch
    picture = tmp_path / "digit.png"
    Image.fromarray(upscale(x[4:5], 128)).save(picture)
    expected = run_attack(models, picture, attack="PGD", eps_255=EPS_255, steps=10, target="student")
    not_a_picture = tmp_path / "notes.txt"
    not_a_picture.write_text("hello")

    with running_demo(models) as url:
        client = Client(url, verbose=False)
        start = time.perf_counter()
        out = client.predict(handle_file(str(picture)), "PGD", EPS_255, 10, "student", api_name="/attack")
        assert time.perf_counter() - start < 30
        clean, adv, delta, student_clean, student_adv, undefended_clean, undefended_adv, onnx_adv, verdict = out
        for path in (clean, adv, delta):
            assert Path(path).suffix == ".png"
            with Image.open(path) as image:
                assert image.size == (256, 256) and image.format == "PNG"
        # PNG is lossless: the served adversarial image is exactly the handler's, nearest-neighbour upscaled.
        assert np.array_equal(np.asarray(Image.open(adv).convert("RGB")), upscale(expected.x_adv, 256))
        assert student_adv["label"] == expected.prediction("student_adv")
        assert undefended_clean["label"] == expected.prediction("undefended_clean")
        assert onnx_adv["label"] == expected.prediction("onnx_adv")
        assert len(student_clean["confidences"]) == 3 and len(undefended_adv["confidences"]) == 3
        assert verdict == expected.verdict

        with pytest.raises(Exception, match="greater than maximum value 16"):
            client.predict(handle_file(str(picture)), "PGD", 40, 10, "student", api_name="/attack")
        with pytest.raises(Exception, match="not an image"):
            client.predict(handle_file(str(not_a_picture)), "PGD", EPS_255, 10, "student", api_name="/attack")


def test_each_request_gets_its_own_output_files(models, labelled_batch):
    """Identical requests must not share output files: Gradio rewrites a shared file while serving it to another."""
    from robustcompress.apps.demo import make_attack_handler

    x, _ = labelled_batch
    picture = Image.fromarray(upscale(x[6:7], 128))
    handler = make_attack_handler(models)
    first, second = (handler(picture, "FGSM", EPS_255, 1, "student") for _ in range(2))
    images = first[:3]
    assert all(isinstance(path, str) and Path(path).suffix == ".png" for path in images + second[:3])
    assert len(set(images) | set(second[:3])) == 6  # six files, none shared
    for path, again in zip(images, second[:3]):
        assert Path(path).read_bytes() == Path(again).read_bytes()  # the same pictures nonetheless


CONCURRENT_REQUESTS = 20


def test_twenty_identical_concurrent_requests_all_succeed(models, labelled_batch, tmp_path):
    from gradio_client import Client, handle_file

    x, _ = labelled_batch
    picture = tmp_path / "digit.png"
    Image.fromarray(upscale(x[7:8], 128)).save(picture)
    expected = run_attack(models, picture, attack="FGSM", eps_255=EPS_255, steps=1, target="undefended")
    with running_demo(models) as url:
        client = Client(url, verbose=False)
        jobs = [client.submit(handle_file(str(picture)), "FGSM", EPS_255, 1, "undefended", api_name="/attack")
                for _ in range(CONCURRENT_REQUESTS)]
        results = [job.result(timeout=120) for job in jobs]
    adversarial = upscale(expected.x_adv, 256)
    for clean, adv, delta, *_, verdict in results:
        assert verdict == expected.verdict
        with Image.open(adv) as image:
            assert np.array_equal(np.asarray(image.convert("RGB")), adversarial)


def test_user_errors_are_logged_in_one_line_each_not_a_traceback(models, labelled_batch, tmp_path, capfd, caplog):
    from gradio_client import Client, handle_file

    x, _ = labelled_batch
    picture = tmp_path / "digit.png"
    Image.fromarray(upscale(x[4:5], 128)).save(picture)
    not_a_picture = tmp_path / "notes.txt"
    not_a_picture.write_text("hello")
    capfd.readouterr()
    with running_demo(models) as url:
        client = Client(url, verbose=False)
        for args in ((handle_file(str(picture)), "PGD", 40, 10, "student"),
                     (handle_file(str(not_a_picture)), "PGD", EPS_255, 10, "student"),
                     (handle_file(str(picture)), "PGD", EPS_255, 10, "nobody")):
            with pytest.raises(Exception):
                client.predict(*args, api_name="/attack")
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("demo: refused")]
    assert len(refused) == 3 and all("\n" not in m for m in refused), refused
    assert any("greater than maximum value 16" in m for m in refused)
    assert any("notes.txt" in m for m in refused) and any("nobody" in m for m in refused)


# Debian's package, never a Playwright browser download; .ci/run installs it.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
TIMEOUT_MS = 60_000

# find_spec: collecting this file (in every xdist worker) does not import Playwright.
needs_browser = pytest.mark.skipif(
    importlib.util.find_spec("playwright") is None or not Path(CHROMIUM).is_file(),
    reason="the browser test needs Playwright for Python and Debian's Chromium (apt-get install chromium)")


def top_label(page, elem_id: str) -> str:
    """The headline class of a gr.Label, once the panel has one."""
    heading = page.locator(f"#{elem_id} [data-testid='label-output-value']")
    heading.wait_for(state="visible", timeout=TIMEOUT_MS)
    return heading.inner_text().strip()


@needs_browser
def test_browser_uploads_a_picture_attacks_it_and_shows_both_models(models, tmp_path):
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
            gallery = page.locator("#gallery img")
            gallery.nth(9).wait_for(state="visible")  # the gallery may render after the button on a busy machine
            assert gallery.count() == 10  # one test digit per class
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


# -- 9. the demo handler refuses NaN --------------------------------------------------------------------------------
def test_demo_handler_refuses_a_nan_tensor():
    pytest.importorskip("PIL")
    from robustcompress.apps.handler import image_to_tensor

    x = torch.rand(1, 3, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        image_to_tensor(x, 8)
    x[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        image_to_tensor(x, 8)


def test_demo_refuses_a_foreign_onnx(tiny_bundle, tmp_path, capsys):
    pytest.importorskip("gradio")
    path = foreign_onnx(tmp_path / "fixed.onnx", "nchw")
    assert main(["demo", str(tiny_bundle), "--onnx", str(path), "--port", "7999"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "has no robustcompress metadata" in line and f"robustcompress export {tiny_bundle}" in line


def test_demo_refuses_a_decompression_bomb_before_decoding(tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio")
    from gradio.data_classes import ImageData

    from robustcompress.apps.demo import PictureInput
    from robustcompress.apps.handler import image_to_tensor

    bomb = png_claiming(tmp_path / "bomb.png", 7000, 7000)
    component = PictureInput(type="pil", image_mode=None, format="png")
    monkeypatch.setattr(gr.Image, "preprocess", never("decoding"))
    with pytest.raises(gr.Error, match="bomb.png is 7000x7000 pixels \\(49 megapixels\\); at most 36"):
        component.preprocess(ImageData(path=str(bomb), orig_name="bomb.png"))
    with pytest.raises(ValueError, match="49 megapixels"):
        image_to_tensor(str(bomb), 16)
