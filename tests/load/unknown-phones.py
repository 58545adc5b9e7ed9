#!/usr/bin/env python3
"""What requests about numbers nobody has cost a running lila.

Starts target/{debug,release}/lila on a fresh data root, measures its
resident memory, has one tenant reset N numbers that do not exist (each a
404), and measures again, with the actors the gateway still holds (from
/metrics: lila_actors_retired_total). Usage:

    python3 tests/load/unknown-phones.py [--requests 10000] [--binary target/release/lila]
"""
import argparse, http.client, json, os, socket, subprocess, sys, tempfile, time

SECRET = "unknown-phones-secret-unknown-phones-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def metric(conn, name):
    conn.request("GET", "/metrics")
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--binary", default="target/debug/lila")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        env = dict(os.environ, LILA_DATA_DIR=f"{work}/data", LILA_BIND=f"127.0.0.1:{port}",
                   LILA_JWT_SECRET=SECRET, LILA_WA_URL="ws://127.0.0.1:9/ws/chat",
                   LILA_CONFIG=f"{work}/lila.toml", RUST_LOG="warn")
        open(f"{work}/lila.toml", "w").close()
        token = subprocess.check_output([args.binary, "token", "--company", "acme"], env=env, text=True).strip()
        server = subprocess.Popen([args.binary, "serve"], env=env)
        try:
            for _ in range(200):
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("GET", "/health")
                    conn.getresponse().read()
                    break
                except OSError:
                    time.sleep(0.05)
            time.sleep(0.5)
            before = rss_kib(server.pid)
            headers = {"Authorization": f"Bearer {token}"}
            started = time.monotonic()
            for i in range(args.requests):
                conn.request("POST", f"/api/sessions/5196{i:07d}/clear", headers=headers)
                response = conn.getresponse()
                response.read()
                assert response.status == 404, response.status
            elapsed = time.monotonic() - started
            time.sleep(1.0)
            after = rss_kib(server.pid)
            retired = metric(conn, "lila_actors_retired_total")
            print(json.dumps({
                "requests": args.requests,
                "rss_before_mib": round(before / 1024, 1),
                "rss_after_mib": round(after / 1024, 1),
                "actors_retired": retired,
                "requests_per_s": round(args.requests / elapsed),
            }))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
