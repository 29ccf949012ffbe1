"""Serve a trained encoder and its index over HTTP with Ray Serve, until Ctrl-C.

    python pipelines/serve.py --model runs/demo/seed-0/crops/model --index runs/demo/seed-0/crops/eval/index
    python pipelines/serve.py --model minilm --index runs/eval/zero_shot/index --port 8000 --set max_k=500
    CROPS_SERVE_TOKEN=$(openssl rand -hex 16) python pipelines/serve.py ... --host 0.0.0.0   # off loopback: a token
    python pipelines/serve.py --config configs/serve.yaml                                   # settings in a file
    python pipelines/serve.py ... --set topology=fused --direct-ingress                      # no proxy: a small node

Starts a local Ray (or joins RAY_ADDRESS), starts Serve's HTTP proxy on --host:--port, deploys serve/app.py's
application (gateway, query encoder, discriminator, retriever), prints the URL and a curl example, and waits.
--config FILE.yaml and --set KEY=VALUE set any ServeSettings field (model, index, limits, batching, threads; the flags
win over the file, --set over both); the endpoints are in serve/README.md. With --direct-ingress (Ray 2.60's
experimental direct ingress, for a local Ray this command starts) the ingress replicas answer HTTP themselves, each on
a port of its own that is printed, and no proxy stands in between.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray import config  # noqa: E402

LOOPBACK = ("127.0.0.1", "localhost", "::1")
PROXY_GRACE_S = 5.0  # how much longer than the app's request_timeout_s the proxy waits


def parse_settings(args: argparse.Namespace) -> dict:
    """ServeSettings' fields: the YAML of --config, then the flags, then --set (crops_ray.config.settings)."""
    flags = {
        "model": args.model,
        "index": args.index,
        "discriminator_model": args.discriminator_model,
        "calibration": args.calibration,
    }
    return config.settings(args.config, flags, args.set)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="encoder folder written by training, or 'minilm' (the default: pretrained)")
    p.add_argument("--index", help="index folder written by evaluation (OUT/index/); required here or in --config")
    p.add_argument(
        "--calibration", help="the gate's calibration JSON that build_data wrote (OUT/discriminator_calibration.json)"
    )
    p.add_argument("--discriminator-model", help="the discriminator's backbone (default: minilm)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    config.add_config_args(p, "ServeSettings (model, index, limits, batching, threads)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: this machine's)")
    p.add_argument("--allow-no-auth", action="store_true", help="serve off loopback without a token (not recommended)")
    p.add_argument(
        "--direct-ingress",
        action="store_true",
        help="the ingress replicas answer HTTP on ports of their own, no proxy (Ray's experimental direct ingress; "
        "on a cluster, every node needs RAY_SERVE_ENABLE_DIRECT_INGRESS=1 in its environment too)",
    )
    args = p.parse_args(argv)
    if args.direct_ingress:
        # Read by Ray Serve when it is imported, and by every Ray process a local Ray starts (a cluster's nodes need
        # it in their own environment).
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"

    from pydantic import ValidationError

    from serve.app import APP_NAME, build_app, direct_ingress_urls, resolve_settings

    try:
        settings = resolve_settings(parse_settings(args))  # fail fast, before Ray starts
    except (FileNotFoundError, ValueError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    token_set = bool(os.environ.get(settings.auth_token_env))
    if args.host not in LOOPBACK and not token_set and not args.allow_no_auth:
        print(
            f"error: --host {args.host} is reachable from other machines; set ${settings.auth_token_env} to require a "
            "bearer token (or pass --allow-no-auth)",
            file=sys.stderr,
        )
        sys.exit(2)

    from ray import serve

    from crops_ray.runtime import init_ray

    init_ray(num_cpus=args.num_cpus)
    # The proxy's deadline is 5 s past the app's, so a slow request gets the Guard's JSON 408, not the proxy's text.
    proxy_timeout_s = settings.request_timeout_s + PROXY_GRACE_S
    serve.start(http_options={"host": args.host, "port": args.port, "request_timeout_s": proxy_timeout_s})
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{host}:{args.port}"
    if args.direct_ingress:
        urls = direct_ingress_urls(APP_NAME, host)
        print(f"direct ingress: {len(urls)} replica(s) answer HTTP at {', '.join(urls)} (no proxy)")
        url = urls[0]
    auth = ' -H "Authorization: Bearer $' + settings.auth_token_env + '"' if token_set else ""
    print(
        f"\nserving {settings.model} with index {settings.index} at {url} (API docs: {url}/docs; auth "
        f"{'on' if token_set else 'off'})"
    )
    print(
        f"  curl -s {url}/v1/search -H 'Content-Type: application/json'{auth}"
        ' -d \'{"query": "jaguar cubs", "k": 5}\''
    )
    print("Ctrl-C stops.", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()


if __name__ == "__main__":
    main()
