"""A screenshot of the search page (serve/page.py) over the demo's models, for the README: docs/page.png.

    .venv/bin/python scripts/page_screenshot.py                              # over runs/demo/seed-0
    .venv/bin/python scripts/page_screenshot.py --run runs/all/seed-0 --query jaguar --k 5

Serves the API and the page in this process (serve.app.in_process_app: the fused gateway's app, no Ray) with the
run's CroPS model beside its DPR, its videos and its qrels, the way `make serve` does, then opens the page in headless
Chromium (Debian's package, driven by Playwright) at a laptop's viewport, searches, and saves a full-page screenshot.
Without --query it searches the first head query of the run's evaluation queries that the qrels grade.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def page_settings(run: str) -> dict:
    """What `make serve` passes, for a demo run folder (RUN/crops, RUN/dpr, RUN/data, RUN/validated, RUN/world)."""
    return {
        "model": f"{run}/crops/model",
        "index": f"{run}/crops/eval/index",
        "calibration": f"{run}/data/discriminator_calibration.json",
        "compare_model": f"{run}/dpr/model",
        "compare_index": f"{run}/dpr/eval/index",
        "videos": f"{run}/validated/videos",
        "qrels": f"{run}/world/eval/qrels.parquet",
        "encoder_backend": "torch",  # no ONNX export for a picture
    }


def default_query(run: str) -> str:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    queries = pq.read_table(f"{run}/world/eval/queries.parquet", columns=["query", "bucket"])
    graded = set(pc.unique(pq.read_table(f"{run}/world/eval/qrels.parquet", columns=["query"])["query"]).to_pylist())
    head = [q for q, b in zip(queries["query"].to_pylist(), queries["bucket"].to_pylist()) if b == "head"]
    return next(q for q in head if q in graded)


def serve_in_thread(app):
    """uvicorn on a free loopback port in a daemon thread: (server, url)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.1)
    if not server.started:
        raise RuntimeError("the page's server did not start within 60 s")
    return server, f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/demo/seed-0", help="a demo run folder (default: runs/demo/seed-0)")
    p.add_argument("--query", help="the query to show (default: the first graded head query of the evaluation)")
    p.add_argument("--k", type=int, default=5, help="results per list")
    p.add_argument("--out", default="docs/page.png")
    p.add_argument("--width", type=int, default=1366, help="viewport width in CSS pixels (a laptop's)")
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = p.parse_args(argv)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")

    from playwright.sync_api import sync_playwright

    from serve.app import in_process_app

    query = args.query or default_query(args.run)
    server, url = serve_in_thread(in_process_app(page_settings(args.run)))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(url + "/")
            page.fill("#q", query)
            page.fill("#k", str(args.k))
            page.click("#search")
            page.wait_for_selector(".column li.hit")
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        server.should_exit = True
    print(f"wrote {args.out}: {query!r}, k={args.k}, {args.width}x{args.height}")


if __name__ == "__main__":
    main()
