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


def _parser() -> argparse.ArgumentParser:
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
    return p


def _checked_settings(args: argparse.Namespace):
    """The ServeSettings, checked before Ray starts; a bad setting or an open host without a token exits with 2."""
    from serve.settings import resolve_settings  # no Ray Serve import before the ingress is chosen

    try:
        settings = resolve_settings(parse_settings(args))  # fail fast, before Ray starts
    except (FileNotFoundError, ValueError) as exc:  # a bad setting: named by crops_ray.config.from_dict
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.host not in LOOPBACK and not os.environ.get(settings.auth_token_env) and not args.allow_no_auth:
        print(
            f"error: --host {args.host} is reachable from other machines; set ${settings.auth_token_env} to require a "
            "bearer token (or pass --allow-no-auth)",
            file=sys.stderr,
        )
        sys.exit(2)
    return settings


def _direct_ingress(args: argparse.Namespace, settings) -> bool:
    """Whether the replica answers HTTP itself: asked for, or auto on the local Ray this command starts (one node:
    its auto topology is fused)."""
    if args.direct_ingress or args.ingress == "direct":
        return True
    local = not os.environ.get("RAY_ADDRESS")
    return args.ingress == "auto" and local and settings.topology in ("auto", "fused")


def _enable_direct_ingress(port: int) -> None:
    """Read by Ray Serve when it is imported, and by every Ray process a local Ray starts (a cluster's nodes need it
    in their own environment). The replica takes ``port`` (and the next ports for more replicas); Serve's proxy still
    runs, on a port above them. Called only once every check passed: a refused call leaves the environment as is."""
    os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", str(port))
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT", str(port + DIRECT_PORTS))


def _deploy(args: argparse.Namespace, settings, direct: bool) -> str:
    """Start Ray and Serve, deploy the application; the URL it answers at (printed with the ingress)."""
    from ray import serve

    from crops_ray.runtime import init_ray
    from serve.app import APP_NAME, build_app

    proxy_port = args.port + DIRECT_PORTS if direct else args.port
    init_ray(num_cpus=args.num_cpus)
    # The proxy's deadline is 5 s past the app's, so a slow request gets the Guard's JSON 408, not the proxy's text.
    proxy_timeout_s = settings.request_timeout_s + PROXY_GRACE_S
    serve.start(http_options={"host": args.host, "port": proxy_port, "request_timeout_s": proxy_timeout_s})
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{host}:{proxy_port}"
    if not direct:
        print(f"ingress: Serve's HTTP proxy at {url}")
        return url
    urls = _replica_urls(APP_NAME, host, args.port, proxy_port)
    print(
        f"ingress: direct: {len(urls)} replica(s) answer HTTP at {', '.join(urls)} (no proxy; Serve's proxy "
        f"also answers at {url})"
    )
    return urls[0]


def _replica_urls(app: str, host: str, port: int, proxy_port: int, wait_s: float = 60.0) -> list[str]:
    """The direct-ingress replicas' URLs: until the controller has a replica's port, its target groups name the
    proxy (at a default port), so wait until every URL is in ``port .. proxy_port - 1`` (or ``wait_s`` passed)."""
    from serve.app import direct_ingress_urls

    deadline, urls = time.time() + wait_s, []
    while time.time() < deadline:
        urls = direct_ingress_urls(app, host)
        if urls and all(port <= int(u.rsplit(":", 1)[1]) < proxy_port for u in urls):
            break
        time.sleep(0.5)
    return urls


def _print_usage(settings, url: str) -> None:
    token_set = bool(os.environ.get(settings.auth_token_env))
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


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = _checked_settings(args)
    direct = _direct_ingress(args, settings)
    if direct:
        _enable_direct_ingress(args.port)
    url = _deploy(args, settings, direct)
    _print_usage(settings, url)

    from ray import serve

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
