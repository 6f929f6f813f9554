"""robustcompress demo: the Gradio app comparing robust and undefended predictions (robustcompress.apps)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

QUICKSTART_OUT = Path("quickstart_out")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="open the Gradio demo: attack images, compare the robust student with an undefended model",
        description=(
            "Serve a web page where you attack test images (FGSM, PGD, APGD-CE) and see the bundle's robust student "
            "hold while its undefended teacher is fooled, plus the exported ONNX student's answer. Without BUNDLE it "
            f"uses {QUICKSTART_OUT}/bundle, running the quickstart first (about 2 minutes) if it is missing. "
            "Needs the 'demo' extra: pip install 'robustcompress[demo]'."
        ),
    )
    p.add_argument("bundle", nargs="?", help=f"bundle folder (default: {QUICKSTART_OUT}/bundle, built if missing)")
    p.add_argument("--onnx", help="exported student (default: student.onnx in the bundle or next to it; exported if absent)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    p.add_argument("--device", default="cpu", help="cpu (default; one picture at a time needs no GPU) or cuda")
    p.set_defaults(run=run)


def _default_bundle() -> Path:
    """The quickstart's bundle, built first (with progress bars) when it is not there yet."""
    from robustcompress.bundle import is_bundle

    bundle = QUICKSTART_OUT / "bundle"
    if not is_bundle(bundle):
        from robustcompress.quickstart import run_quickstart

        print(f"No bundle given and {bundle} does not exist yet: running the quickstart first (about 2 minutes).",
              file=sys.stderr)
        run_quickstart(QUICKSTART_OUT, progress=True)
    return bundle


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("the demo needs Gradio; install it with: pip install 'robustcompress[demo]'") from exc
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a TCP port; use a number between 1 and 65535, e.g. 7860")
    if args.bundle is not None and not Path(args.bundle).is_dir():
        raise FileNotFoundError(
            f"bundle folder {args.bundle} does not exist; pass a folder written by 'robustcompress fit' or "
            f"'quickstart', or leave it out to use {QUICKSTART_OUT}/bundle"
        )
    bundle = Path(args.bundle) if args.bundle is not None else _default_bundle()
    from robustcompress.apps.demo import build_app, serve
    from robustcompress.apps.handler import load_demo_models

    app = build_app(load_demo_models(bundle, onnx_path=args.onnx, device=args.device))
    print(f"Serving the demo for {bundle} on http://{args.host}:{args.port} (Ctrl+C to stop)", file=sys.stderr)
    try:
        serve(app, host=args.host, port=args.port)
    except OSError as exc:
        raise RuntimeError(f"could not serve on {args.host}:{args.port} ({exc}); pick another --port") from exc
    return 0
