"""A gRPC client (Debian's grpcio) for the grpc tests: one channel (one HTTP/2 connection).

Usage: client.py PORT [CERT]   (with CERT: TLS, the server's certificate trusted, name localhost)
Says "ready" once connected; on each line read, makes the calls below and prints, on one
line, "Method:CODE=n" for every method and final status code it saw (as grpcio reports them).
"""
import collections
import sys

import grpc

CALLS = [
    ("Unary", b"ok", None),
    ("Unary", b"ok", None),
    ("Unary", b"ok", None),
    ("Unary", b"not_found", None),
    ("Unary", b"not_found", None),
    ("Unary", b"unavailable", None),
    ("Unary", b"slow", 0.2),
    ("Stream", b"5", None),
    ("Stream", b"3", None),
    ("Upload", [b"a", b"b", b"c", b"d"], None),
]


def main():
    port = int(sys.argv[1])
    target = f"127.0.0.1:{port}"
    if len(sys.argv) > 2:
        creds = grpc.ssl_channel_credentials(root_certificates=open(sys.argv[2], "rb").read())
        channel = grpc.secure_channel(
            target, creds, options=[("grpc.ssl_target_name_override", "localhost")]
        )
    else:
        channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=10)
    unary = channel.unary_unary("/recap.Test/Unary")
    stream = channel.unary_stream("/recap.Test/Stream")
    upload = channel.stream_unary("/recap.Test/Upload")
    print("ready", flush=True)
    for _ in sys.stdin:
        seen = collections.Counter()
        for method, request, timeout in CALLS:
            try:
                if method == "Unary":
                    unary(request, timeout=timeout)
                elif method == "Stream":
                    got = list(stream(request, timeout=timeout))
                    assert len(got) == int(request), got
                else:
                    assert upload(iter(request), timeout=timeout) == b"%d" % len(request)
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
            seen[f"{method}:{code.value[0]}"] += 1
        print(" ".join(f"{k}={v}" for k, v in sorted(seen.items())), flush=True)


main()
