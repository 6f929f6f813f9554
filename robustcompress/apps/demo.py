"""The Gradio demo: attack a picture and watch the robust student hold while the undefended model is fooled."""
from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import numpy as np
from PIL import Image, UnidentifiedImageError

from robustcompress.apps.handler import (
    ATTACKS,
    MAX_EPS_255,
    MAX_STEPS,
    TARGETS,
    DemoModels,
    gallery_images,
    perturbation_image,
    run_attack,
    upscale,
)
from robustcompress.io import atomic_write
from robustcompress_runtime.images import check_pixel_count

log = logging.getLogger("robustcompress")

# At most two attacks run at once (more only slow each other down on a CPU server); the rest wait in a bounded FIFO
# queue, and a browser tab cannot resubmit while its click is pending, so one user cannot starve the others.
ATTACK_CONCURRENCY = 2
QUEUE_MAX_SIZE = 32
MAX_UPLOAD = "25mb"
DISPLAY_SIDE = 256
GALLERY_SIDE = 128
# System fonts only: the default theme fetches Google Fonts, which an offline demo cannot reach.
THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "Consolas", "monospace"]
)
CSS = ".pixelated img { image-rendering: pixelated; }"


#: Request folders older than this are removed as new requests arrive (Gradio has copied their files by then).
OUTPUT_MAX_AGE_S = 15 * 60


def user_error(message: str) -> gr.Error:
    """The error a user sees in the page; the server log gets one line, not a traceback (the mistake is theirs)."""
    log.warning("demo: refused a request: %s", message)
    return gr.Error(message, print_exception=False)


class RequestFiles:
    """Every request's pictures in files of its own, under one private folder removed when the process ends.

    Gradio names the file of a returned array after its bytes and rewrites it in place, so two identical requests
    (two people attacking the same gallery picture) shared one file, rewritten while it was served to the other
    ("Too little data for declared Content-Length"). Gradio copies a returned path into its cache by a rename, so
    files of our own are safe to serve.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="robustcompress-demo-"))
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)

    def new_folder(self) -> Path:
        """A fresh folder for one request (and the removal of those old enough to have been served)."""
        self._remove_old_folders()
        return Path(tempfile.mkdtemp(dir=self.root, prefix="request-"))

    def save_png(self, folder: Path, name: str, pixels: np.ndarray | Image.Image) -> str:
        path = folder / f"{name}.png"
        picture = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
        atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
        return str(path)

    def _remove_old_folders(self) -> None:
        cutoff = time.time() - OUTPUT_MAX_AGE_S
        for folder in self.root.glob("request-*"):
            try:
                old = folder.stat().st_mtime < cutoff
            except FileNotFoundError:  # another request removed it a moment ago
                continue
            if old:
                shutil.rmtree(folder, ignore_errors=True)  # ignore_errors: another request may be removing it too


class CheckedSlider(gr.Slider):
    """gr.Slider whose out-of-range values are a message in the page and one line in the log, not a traceback."""

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        try:
            return super().preprocess(payload)
        except gr.Error as exc:
            raise user_error(str(exc.message)) from exc


class CheckedRadio(gr.Radio):
    """gr.Radio whose unknown choices are a message in the page and one line in the log, not a traceback."""

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        try:
            return super().preprocess(payload)
        except (gr.Error, ValueError) as exc:
            raise user_error(str(getattr(exc, "message", exc))) from exc


class PictureInput(gr.Image):
    """gr.Image whose unreadable uploads (not an image, absurdly large) become a message in the UI, not a trace."""

    is_template = True  # rendered by the frontend's ordinary Image component

    def preprocess(self, payload: Any) -> Any:
        name = getattr(payload, "orig_name", None) or "the uploaded file"
        path = getattr(payload, "path", None)
        if path:  # read the header only: a decompression bomb is refused before Gradio decodes it
            try:
                with Image.open(path) as probe:
                    size = probe.size
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
                size = None  # Gradio's own decoding below reports it
            if size is not None:
                try:
                    check_pixel_count(*size, what=name)
                except ValueError as exc:
                    raise user_error(str(exc)) from exc
        try:
            return super().preprocess(payload)
        except Image.DecompressionBombError as exc:
            raise user_error(f"This image is far too large to process ({exc}). Downscale it and try again.") from exc
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise user_error(
                f"{name} is not an image Pillow can read; upload a PNG, JPEG, BMP, TIFF or WebP picture."
            ) from exc


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "–"


def robustness_markdown(models: DemoModels) -> str:
    """The bundle's verification numbers (and the quickstart's comparison rows when its report is beside it)."""
    lines = [
        f"Bundle `{models.bundle_dir}`: student **{models.student.name}** trained with **{models.method}** for "
        f"L∞ eps {models.eps * 255:.0f}/255 on **{models.dataset or 'its dataset'}**; undefended model "
        f"**{models.undefended_name}** (standard training). ONNX student: `{models.onnx_path}`.",
        "",
    ]
    metrics = models.metrics
    if not metrics or "clean_acc" not in metrics:
        lines.append(
            "This bundle carries no verification numbers; measure them with "
            f"`robustcompress evaluate {models.bundle_dir} {models.dataset or 'DATA'} --attacks pgd20 autoattack`."
        )
        return "\n".join(lines)
    attacks = list(metrics.get("robust_acc", {}))
    rows: list[tuple[str, dict[str, Any]]] = [(f"robust student {models.student.name} ({models.method})", metrics)]
    report = models.report or {}
    if isinstance(report.get("baseline"), dict):
        rows.append((f"baseline {report.get('student', '')} ({report['baseline'].get('method', '')})", report["baseline"]))
    for teacher in report.get("teachers_metrics", []) or []:
        rows.append((f"teacher {teacher.get('name', '')} (standard, undefended)", teacher))
    lines.append("| model | clean | " + " | ".join(attacks) + " | worst case |")
    lines.append("|---|---|" + "---|" * len(attacks) + "---|")
    for name, m in rows:
        cells = " | ".join(_percent(m.get("robust_acc", {}).get(a)) for a in attacks)
        lines.append(f"| {name} | {_percent(m.get('clean_acc'))} | {cells} | {_percent(m.get('worst_case_acc'))} |")
    eps = metrics.get("eps", models.eps)
    lines += ["", f"Accuracy on {metrics.get('n_examples', '?')} held-out test images at eps {eps * 255:.0f}/255 "
              "(numbers recorded in the bundle when it was verified)."]
    return "\n".join(lines)


def _gallery(models: DemoModels) -> tuple[list[tuple[Image.Image, str]], str]:
    """Gallery pictures (upscaled, so the browser does not blur them) and a caption for the gallery."""
    try:
        x, y = gallery_images(models.dataset, models.input_size, source=models.data_source)
    except (ValueError, FileNotFoundError) as exc:
        log.warning("demo gallery left empty: %s", exc)
        return [], f"No gallery: {exc}"
    items = [
        (Image.fromarray(upscale(x[i : i + 1], GALLERY_SIDE)), models.class_names[int(y[i])]) for i in range(len(x))
    ]
    return items, f"Test images of {models.dataset} (click one to use it)"


def make_attack_handler(models: DemoModels, files: RequestFiles | None = None) -> Callable[..., tuple[Any, ...]]:
    """The click handler: run_attack, with user errors shown as messages (one log line each) and the results as UI
    values; its three pictures are PNG files of this request's own (see RequestFiles)."""
    files = files or RequestFiles()

    def on_attack(picture: Any, attack: str, eps_255: float, steps: float, target: str) -> tuple[Any, ...]:
        try:
            result = run_attack(models, picture, attack, eps_255, steps, target)
        except ValueError as exc:
            raise user_error(str(exc)) from exc
        for note in result.notes:
            gr.Warning(f"Note: {note}.")
        delta = perturbation_image(result.x_clean, result.x_adv, result.eps)
        folder = files.new_folder()
        return (
            files.save_png(folder, "clean", upscale(result.x_clean, DISPLAY_SIDE)),
            files.save_png(folder, "adversarial", upscale(result.x_adv, DISPLAY_SIDE)),
            files.save_png(folder, "perturbation", upscale(delta, DISPLAY_SIDE)),
            result.top_k("student_clean"),
            result.top_k("student_adv"),
            result.top_k("undefended_clean"),
            result.top_k("undefended_adv"),
            result.top_k("onnx_adv"),
            result.verdict,
        )

    return on_attack


def build_app(models: DemoModels) -> gr.Blocks:
    """The Blocks app for one loaded bundle (not launched)."""
    gallery_items, gallery_caption = _gallery(models)
    files = RequestFiles()
    # Saved once as files: a picked picture returned as an image would be rewritten for every click on it.
    gallery_folder = files.root / "gallery"
    gallery_folder.mkdir()
    gallery_pictures = [files.save_png(gallery_folder, f"{i:03d}", picture)
                        for i, (picture, _) in enumerate(gallery_items)]
    default_eps = min(MAX_EPS_255, max(1.0, round(models.eps * 255))) if models.eps else 8.0

    with gr.Blocks(title="robustcompress demo", analytics_enabled=False) as app:
        gr.Markdown(
            "# Robust student vs undefended model\n"
            "Pick or upload a picture, choose an attack and a budget, and press **Attack**. The perturbation is at "
            f"most eps/255 per pixel, too small to see, yet it can flip an undefended model. "
            f"Robust student: **{models.student.name}** ({models.method}); undefended: **{models.undefended_name}**."
        )
        with gr.Row():
            with gr.Column(scale=1):
                picture = PictureInput(
                    label="Picture", type="pil", image_mode=None, format="png", sources=["upload", "clipboard"],
                    height=DISPLAY_SIDE, elem_id="picture", elem_classes="pixelated",
                )
                gallery = gr.Gallery(
                    value=gallery_items or None, label=gallery_caption, columns=5, height="auto", format="png",
                    allow_preview=False, interactive=False, elem_id="gallery", elem_classes="pixelated",
                )
            with gr.Column(scale=1):
                attack = CheckedRadio(list(ATTACKS), value="PGD", label="Attack", elem_id="attack-kind")
                eps = CheckedSlider(0, MAX_EPS_255, value=default_eps, step=0.5, label="eps (/255)",
                                    info=f"L∞ budget per pixel; the student was trained for {models.eps * 255:.0f}/255")
                steps = CheckedSlider(1, MAX_STEPS, value=10, step=1, precision=0, label="Steps",
                                      info="PGD iterations (FGSM takes one step; APGD-CE runs its own 100)")
                # Default: fool the undefended model white-box and show the same image to the student, the story a
                # newcomer should see first; switching to the student shows the stronger, white-box test.
                target = CheckedRadio([(label, key) for key, label in TARGETS.items()], value="undefended",
                                      label="The attack is computed on", elem_id="attack-target")
                button = gr.Button("Attack", variant="primary", elem_id="attack-button")
                verdict = gr.Textbox(label="Verdict", interactive=False, lines=2, elem_id="verdict")
        with gr.Row():
            # Taller than the picture so the component's label does not cover its top rows.
            image_kw: dict[str, Any] = dict(format="png", interactive=False, height=DISPLAY_SIDE + 64,
                                            elem_classes="pixelated")
            clean_image = gr.Image(label="Clean image", elem_id="clean-image", **image_kw)
            adv_image = gr.Image(label="Adversarial image", elem_id="adv-image", **image_kw)
            delta_image = gr.Image(label="Perturbation (-eps black, 0 grey, +eps white)",
                                   elem_id="delta-image", **image_kw)
        with gr.Row():
            with gr.Column():
                gr.Markdown(f"### Robust student ({models.student.name})")
                student_clean = gr.Label(num_top_classes=3, label="Student on the clean image", elem_id="student-clean")
                student_adv = gr.Label(num_top_classes=3, label="Student on the adversarial image", elem_id="student-adv")
            with gr.Column():
                gr.Markdown(f"### Undefended model ({models.undefended_name})")
                undefended_clean = gr.Label(num_top_classes=3, label="Undefended on the clean image",
                                            elem_id="undefended-clean")
                undefended_adv = gr.Label(num_top_classes=3, label="Undefended on the adversarial image",
                                          elem_id="undefended-adv")
            with gr.Column():
                gr.Markdown(f"### Exported ONNX student ({Path(models.onnx_path).name})")
                onnx_adv = gr.Label(num_top_classes=3, label="ONNX student on the adversarial image", elem_id="onnx-adv")
        with gr.Accordion("Robustness at a glance", open=True):
            gr.Markdown(robustness_markdown(models), elem_id="robustness")
            if models.plot_path is not None:
                gr.Image(value=str(models.plot_path), label="Accuracy vs eps (from the bundle's report)", format="png",
                         interactive=False, elem_id="eps-plot")
            else:
                gr.Markdown("_No accuracy-vs-eps plot (a .png) was found in the bundle or its folder._")

        def pick(evt: gr.SelectData) -> str:
            return gallery_pictures[evt.index]

        gallery.select(pick, None, picture, api_name=False)
        button.click(
            make_attack_handler(models, files),
            inputs=[picture, attack, eps, steps, target],
            outputs=[clean_image, adv_image, delta_image, student_clean, student_adv, undefended_clean,
                     undefended_adv, onnx_adv, verdict],
            api_name="attack",
            concurrency_limit=ATTACK_CONCURRENCY,
            concurrency_id="attack",
        )
    app.queue(max_size=QUEUE_MAX_SIZE)
    return app


def serve(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, block: bool = True,
          quiet: bool = False) -> gr.Blocks:
    """Launch a built app on host:port (port None: the first free one from 7860); block=False returns at once."""
    app.launch(
        server_name=host, server_port=port, prevent_thread_lock=not block, theme=THEME, css=CSS,
        max_file_size=MAX_UPLOAD, ssr_mode=False, quiet=quiet, share=False, mcp_server=False,
    )
    return app
