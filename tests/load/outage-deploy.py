#!/usr/bin/env python3
"""A deploy during an outage, as the review measured it: the release binary
(no LILA_WA_URL: WhatsApp's own address, which does not resolve without a
network), N sessions created over HTTP, SIGTERM 5 s later; prints the exit
time and how many version fetches the log shows.

    cargo build --release && python3 tests/load/outage-deploy.py target/release/lila 1000
"""
import http.client, os, socket, subprocess, sys, tempfile, time, signal
BIN=sys.argv[1]; N=int(sys.argv[2])
SECRET="outage-secret-outage-secret-outage-secret"
with socket.socket() as s:
    s.bind(("127.0.0.1",0)); port=s.getsockname()[1]
work=tempfile.mkdtemp()
env=dict(os.environ, LILA_DATA_DIR=f"{work}/data", LILA_BIND=f"127.0.0.1:{port}", LILA_JWT_SECRET=SECRET, LILA_CONFIG=f"{work}/lila.toml", RUST_LOG="info", NO_COLOR="1")
env.pop("LILA_WA_URL", None)
open(f"{work}/lila.toml","w").close()
token=subprocess.check_output([BIN,"token","--company","acme"],env=env,text=True).strip()
log=open(f"{work}/lila.log","w")
p=subprocess.Popen([BIN,"serve"],env=env,stdout=log,stderr=log)
for _ in range(200):
    try:
        c=http.client.HTTPConnection("127.0.0.1",port,timeout=10); c.request("GET","/health"); c.getresponse().read(); break
    except OSError: time.sleep(0.05)
t0=time.monotonic()
for i in range(N):
    c.request("POST","/api/sessions",body=f'{{"phoneNumber":"5198{i:07d}"}}',headers={"Authorization":f"Bearer {token}","Content-Type":"application/json"})
    r=c.getresponse(); r.read()
    assert r.status==200, r.status
created=time.monotonic()-t0
time.sleep(5)
c.request("GET",f"/api/sessions/51980000000/status",headers={"Authorization":f"Bearer {token}"}); st=c.getresponse().read().decode()
t=time.monotonic(); p.send_signal(signal.SIGTERM); p.wait(); exit_s=time.monotonic()-t
text=open(f"{work}/lila.log").read()
print(f"sessions={N} created_in={created:.1f}s exit_after_sigterm={exit_s:.2f}s version_fetches={text.count('fetching WhatsApp Web')} fetch_failures={text.count('could not fetch WhatsApp Web')}")
print([l for l in text.splitlines() if 'sessions stopped' in l][-1][-120:])
print(st[:300])
