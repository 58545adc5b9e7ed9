#!/usr/bin/env python3
"""Concurrent requests on the same two phones, against the real binary.

The race campaign of host/tests/campaign_reset_race.rs drives the session
actors with a scripted client; this one goes through HTTP, with the real
whatsapp-rust client and the simulator (which also scans the QR codes), so
that a reset races a pairing that writes into the store. Workers fire
create, clear, delete, status, QR (+ scan), send and list at random, with
a tenant token of each company and an operator token.

A request fails the run when it answers 5xx. At the end each phone is reset
once more, and any file of it left in the data directory (but its
tombstone record), or a status other than 404, is a resurrection. lila must
not panic.

Run: python3 tests/contract/race-http.py [--seconds 600] [--workers 8] [--seed N]
(builds nothing: needs target/debug/lila and target/debug/wa-sim, or
LILA_BIN / WA_SIM_BIN). Last line: `N passed, M failed`.
"""

import argparse
import json
import os
import pathlib
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
PHONES = ["51987654321", "51987654322"]
SECRET = "race-http-secret-race-http-secret-race"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(base, method, path, token=None, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 32))
    args = parser.parse_args()
    lila = os.environ.get("LILA_BIN", str(ROOT / "target/debug/lila"))
    wa_sim = os.environ.get("WA_SIM_BIN", str(ROOT / "target/debug/wa-sim"))
    print(f"race-http: seed {args.seed}, {args.workers} workers, {args.seconds:.0f} s", flush=True)

    work = pathlib.Path(tempfile.mkdtemp(prefix="lila-race-http-"))
    sim_port, lila_port = free_port(), free_port()
    base = f"http://127.0.0.1:{lila_port}"
    sim_base = f"http://127.0.0.1:{sim_port}"
    env = dict(
        os.environ,
        LILA_JWT_SECRET=SECRET,
        LILA_DATA_DIR=str(work / "data"),
        LILA_BIND=f"127.0.0.1:{lila_port}",
        LILA_WA_URL=f"ws://127.0.0.1:{sim_port}/ws/chat",
        RUST_LOG="warn",
        NO_COLOR="1",
    )
    env.pop("RUST_BACKTRACE", None)
    sim = subprocess.Popen(
        [wa_sim, "--listen", f"127.0.0.1:{sim_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = open(work / "lila.log", "w")
    server = subprocess.Popen([lila, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    passed, failed, scans = 0, 0, 0
    lock = threading.Lock()
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)

        def token(*who):
            return subprocess.run(
                [lila, "token", *who, "--hours", "2"], env=env, capture_output=True, text=True, check=True
            ).stdout.strip()

        tokens = [token("--company", "acme"), token("--company", "other"), token("--operator")]
        operator = tokens[2]

        def worker(seed):
            nonlocal passed, failed, scans
            rnd = random.Random(seed)
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                t, phone = rnd.choice(tokens), rnd.choice(PHONES)
                op = rnd.choice(["create", "create", "clear", "delete", "status", "qr", "qr", "qr", "send", "list"])
                if op == "create":
                    body = {"phoneNumber": phone, "companyId": rnd.choice(["acme", "other"])}
                    code, reply = request(base, "POST", "/api/sessions", t, body)
                elif op == "clear":
                    code, reply = request(base, "POST", f"/api/sessions/{phone}/clear", t, {})
                elif op == "delete":
                    code, reply = request(base, "DELETE", f"/api/sessions/{phone}", t)
                elif op == "status":
                    code, reply = request(base, "GET", f"/api/sessions/{phone}/status", t)
                elif op == "send":
                    body = {"to": "51911111111", "text": "race"}
                    code, reply = request(base, "POST", f"/api/sessions/{phone}/messages", t, body)
                elif op == "list":
                    code, reply = request(base, "GET", "/api/sessions", t)
                else:
                    code, reply = request(base, "GET", f"/api/sessions/{phone}/qr", t)
                    try:
                        qr = json.loads(reply).get("qr")
                    except ValueError:
                        qr = None
                    if qr:
                        scan = urllib.request.Request(
                            f"{sim_base}/admin/scan-qr?phone={phone}", data=qr.encode(), method="POST"
                        )
                        try:
                            urllib.request.urlopen(scan, timeout=10).read()
                            with lock:
                                scans += 1
                        except OSError:
                            pass
                with lock:
                    if code >= 500:
                        failed += 1
                        print(f"race-http: {op} {phone} answered {code}: {reply[:200]!r}", flush=True)
                    else:
                        passed += 1

        threads = [threading.Thread(target=worker, args=(args.seed + i,)) for i in range(args.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        # The last word is a reset: nothing of either phone may be left.
        for phone in PHONES:
            code, reply = request(base, "POST", f"/api/sessions/{phone}/clear", operator, {})
            status, _ = request(base, "GET", f"/api/sessions/{phone}/status", operator)
            # Its record stays as the tombstone (desired "cleared", no purge
            # pending); anything else of the phone is a resurrection.
            record = work / "data/lila/phones" / f"{phone}.json"
            left = [str(p) for p in (work / "data").rglob(f"*{phone}*") if p != record]
            if record.exists():
                tombstone = json.loads(record.read_text())
                if tombstone.get("desired") != "cleared" or tombstone.get("purge") is not None:
                    left.append(f"{record}: {tombstone}")
            if code >= 500 or status != 404 or left:
                failed += 1
                print(f"race-http: resurrection of {phone}: clear {code}, status {status}, files {left}", flush=True)
            else:
                passed += 1
        if server.poll() is not None:
            failed += 1
            print("race-http: lila exited during the run", flush=True)
    finally:
        server.terminate()
        sim.terminate()
        server.wait()
        sim.wait()
        log.close()
    text = (work / "lila.log").read_text(errors="replace")
    if "panicked" in text:
        failed += 1
        print("race-http: lila panicked:\n" + text[text.index("panicked") - 200 :][:1200], flush=True)
    print(f"race-http: {scans} QR scans; lila's log: {work / 'lila.log'}" if failed else f"race-http: {scans} QR scans")
    if not failed:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"race-http: replay with --seed {args.seed} --workers {args.workers}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
