"""An HTTPS client on one keep-alive connection (http.client over Python's ssl, which is
OpenSSL's libssl): `client.py PORT [--early] METHOD:PATH...`. With --early it makes one GET /ok
before saying "ready" (a connection older than the window), then waits for a line on stdin;
prints the statuses it got, then waits for another line before it exits."""
import http.client, ssl, sys

port = int(sys.argv[1])
args = sys.argv[2:]
early = args and args[0] == "--early"
if early:
    args = args[1:]
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ssl._create_unverified_context())

def ask(method, path):
    conn.request(method, path)
    r = conn.getresponse()
    r.read()
    return r.status

if early:
    ask("GET", "/ok")
print("ready", flush=True)
sys.stdin.readline()
got = [ask(*a.split(":", 1)) for a in args]
print(" ".join(map(str, got)), flush=True)
sys.stdin.readline()
