"""CPU per API call: one Secret PATCH, N times in a row, through the operator's client
(``Connection``: http.client's kept-alive connection when direct), through urllib3's pool
for the same server (what the client used before decision 6), and through a bare
http.client connection; against a control plane of its own (docs/decisions.md, record 6).

    .venv/bin/python bench/api_call.py [--calls 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import time
import urllib.parse
from collections.abc import Callable

import orjson
from common import ControlPlane  # sets sys.path for the next import

from externalauth.kube import api, connection


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with ControlPlane() as cp:
        client = connection.connect(kubeconfig=str(cp.kubeconfig))
        kube = api.Kube(client)
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
                  "data": {"access_token": base64.b64encode(b"x" * 40).decode()}}
        client.request("POST", namespace="default", url="secrets", data=orjson.dumps(secret),
                       headers={"Content-Type": "application/json"})
        context = connection.tls_context(client.config)
        headers = {**client._headers, "Content-Type": "application/merge-patch+json"}
        path = "/api/v1/namespaces/default/secrets/s"
        held = client._pool
        assert held is not None
        pool = held[1].server
        parts = urllib.parse.urlsplit(client.url)
        bare = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, context=context)

        def body(i: int) -> bytes:
            return orjson.dumps({"metadata": {"annotations": {"n": str(i)}}})

        def through_client(i: int) -> None:
            kube.patch_secret("default", "s", {"metadata": {"annotations": {"n": str(i)}}}, resource_version=None)

        def through_urllib3(i: int) -> None:
            orjson.loads(pool.urlopen("PATCH", path, body=body(i), headers=headers, retries=False,
                                      redirect=False).data)

        def through_http_client(i: int) -> None:
            bare.request("PATCH", path, body=body(i), headers=headers)
            orjson.loads(bare.getresponse().read())

        ways: dict[str, Callable[[int], None]] = {
            "client": through_client, "urllib3_pool": through_urllib3, "http_client": through_http_client}
        figures: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, call in ways.items():
                for i in range(100):
                    call(i)
                start = time.process_time()
                for i in range(args.calls):
                    call(i)
                figures[name].append(round((time.process_time() - start) / args.calls * 1e6))
        print(json.dumps({"calls": args.calls, "cpu_us_per_patch": figures,
                          "median_us": {k: sorted(v)[len(v) // 2] for k, v in figures.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
