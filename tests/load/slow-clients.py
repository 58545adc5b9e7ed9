#!/usr/bin/env python3
"""Slow and many clients against a running lila with its default [http] settings.

Starts target/{debug,release}/lila on a fresh data root, then:
1. trickles one request head a byte every 0.5 s and reports when the
   server cut it off (the header timeout, 10 s by default);
2. opens N connections that each send half a request head and never finish,
   and reports /health's latency meanwhile (median and worst of 20), how
   many of the N the server still holds, and lila_http_connections_open.
Usage:

    python3 tests/load/slow-clients.py [--connections 2000] [--binary target/release/lila]
"""
import argparse, http.client, os, resource, socket, subprocess, tempfile, time

SECRET = "slow-clients-secret-slow-clients-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(port, name):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return 0


def health_ms(port):
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    return (time.monotonic() - started) * 1000


def is_open(sock):
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--binary", default="target/debug/lila")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        env = dict(os.environ, LILA_DATA_DIR=f"{work}/data", LILA_BIND=f"127.0.0.1:{port}",
                   LILA_JWT_SECRET=SECRET, LILA_WA_URL="ws://127.0.0.1:9/ws/chat",
                   LILA_CONFIG=f"{work}/lila.toml", RUST_LOG="warn")
        open(f"{work}/lila.toml", "w").close()
        server = subprocess.Popen([args.binary, "serve"], env=env)
        try:
            for _ in range(200):
                try:
                    health_ms(port)
                    break
                except OSError:
                    time.sleep(0.05)
            slow = socket.create_connection(("127.0.0.1", port))
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            started = time.monotonic()
            while time.monotonic() - started < 60:
                try:
                    slow.sendall(b"x")
                except OSError:
                    break
                if not is_open(slow):
                    break
                slow.setblocking(True)
                time.sleep(0.5)
            print(f"trickled head cut off after {time.monotonic() - started:.1f} s")

            flood = []
            for _ in range(args.connections):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                flood.append(s)
            latencies = sorted(health_ms(port) for _ in range(20))
            time.sleep(0.5)
            still_open = sum(1 for s in flood if is_open(s))
            print(f"{args.connections} half-sent heads: /health median {latencies[10]:.1f} ms, "
                  f"worst {latencies[-1]:.1f} ms; {still_open} of them still open, "
                  f"lila_http_connections_open {metric(port, 'lila_http_connections_open')}, "
                  f"evicted {metric(port, 'lila_http_connections_evicted_total')}")
        finally:
            server.terminate()
            server.wait(timeout=20)


if __name__ == "__main__":
    main()
