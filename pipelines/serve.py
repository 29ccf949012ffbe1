"""Serve a trained encoder and its index over HTTP with Ray Serve, until Ctrl-C.

    python pipelines/serve.py --model runs/demo/seed-0/crops/model --index runs/demo/seed-0/crops/eval/index
    python pipelines/serve.py --model minilm --index runs/eval/zero_shot/index --port 8000 --set max_k=500
    CROPS_SERVE_TOKEN=$(openssl rand -hex 16) python pipelines/serve.py ... --host 0.0.0.0   # off loopback: a token
    python pipelines/serve.py --config configs/serve.yaml                                   # settings in a file
    RAY_ADDRESS=... python pipelines/serve.py ...                                           # a cluster: split

Starts a local Ray (or joins RAY_ADDRESS), deploys serve/app.py's application, prints the URL, the topology and the
ingress it chose, and a curl example, and waits. --config FILE.yaml and --set KEY=VALUE set any ServeSettings field
(model, index, limits, batching, threads; the flags win over the file, --set over both); the endpoints are in
serve/README.md.

The fast path is the default on one node: on the local Ray this command starts, the application is fused (one
replica holds the gateway and the three models) and answers HTTP itself on --port (Ray 2.60's direct ingress), with
Serve's proxy one port up for tools that expect it. On a cluster (RAY_ADDRESS) the topology is split, each model
scaling on its own, behind Serve's proxy on --port. --set topology=... and --ingress direct|proxy choose by hand.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray import config  # noqa: E402

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DIRECT_PORTS = 8  # with direct ingress: ingress replicas on --port .. --port + 7, Serve's proxy on --port + 8
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
        "--ingress",
        choices=("auto", "direct", "proxy"),
        default="auto",
        help="direct: the ingress replica answers HTTP on --port itself, no proxy in between (Ray's experimental "
        "direct ingress; on a cluster every node needs RAY_SERVE_ENABLE_DIRECT_INGRESS=1 in its environment too); "
        "proxy: Serve's HTTP proxy on --port; auto (default): direct on the local Ray this command starts, with a "
        "fused topology, proxy otherwise",
    )
    p.add_argument("--direct-ingress", action="store_true", help="the same as --ingress direct")
    args = p.parse_args(argv)
    local = not os.environ.get("RAY_ADDRESS")

    from pydantic import ValidationError

    from serve.settings import resolve_settings  # no Ray Serve import before the ingress is chosen

    try:
        settings = resolve_settings(parse_settings(args))  # fail fast, before Ray starts
    except (FileNotFoundError, ValueError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    direct = args.direct_ingress or args.ingress == "direct"
    if args.ingress == "auto" and not args.direct_ingress:
        direct = local and settings.topology in ("auto", "fused")  # a local Ray is one node: auto is fused there
    proxy_port = args.port + DIRECT_PORTS if direct else args.port
    token_set = bool(os.environ.get(settings.auth_token_env))
    if args.host not in LOOPBACK and not token_set and not args.allow_no_auth:
        print(
            f"error: --host {args.host} is reachable from other machines; set ${settings.auth_token_env} to require a "
            "bearer token (or pass --allow-no-auth)",
            file=sys.stderr,
        )
        sys.exit(2)
    if direct:  # only once every check passed: a refused call leaves the environment as it found it
        # Read by Ray Serve when it is imported, and by every Ray process a local Ray starts (a cluster's nodes need
        # it in their own environment). The replica takes --port (and the next ports for more replicas); Serve's
        # proxy still runs, on a port above them.
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", str(args.port))
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT", str(args.port + DIRECT_PORTS))

    from ray import serve

    from crops_ray.runtime import init_ray
    from serve.app import APP_NAME, build_app, direct_ingress_urls

    init_ray(num_cpus=args.num_cpus)
    # The proxy's deadline is 5 s past the app's, so a slow request gets the Guard's JSON 408, not the proxy's text.
    proxy_timeout_s = settings.request_timeout_s + PROXY_GRACE_S
    serve.start(http_options={"host": args.host, "port": proxy_port, "request_timeout_s": proxy_timeout_s})
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{host}:{proxy_port}"
    if direct:
        # Until the controller has the replica's port, its target groups name the proxy (at a default port): wait.
        deadline, urls = time.time() + 60, []
        while time.time() < deadline:
            urls = direct_ingress_urls(APP_NAME, host)
            if urls and all(args.port <= int(u.rsplit(":", 1)[1]) < proxy_port for u in urls):
                break
            time.sleep(0.5)
        print(
            f"ingress: direct: {len(urls)} replica(s) answer HTTP at {', '.join(urls)} (no proxy; Serve's proxy "
            f"also answers at {url})"
        )
        url = urls[0]
    else:
        print(f"ingress: Serve's HTTP proxy at {url}")
    auth = ' -H "Authorization: Bearer $' + settings.auth_token_env + '"' if token_set else ""
    print(
        f"\nserving {settings.model} with index {settings.index} at {url} (API docs: {url}/docs; auth "
        f"{'on' if token_set else 'off'})"
    )
    print(
        f"  curl -s {url}/v1/search -H 'Content-Type: application/json'{auth}"
        ' -d \'{"query": "jaguar cubs", "k": 5}\''
    )
    print(f"  search page: {url}/  (two retrievers side by side with compare_model/compare_index; serve/README.md)")
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
