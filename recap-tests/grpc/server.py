"""A gRPC server (Debian's grpcio: gRPC core, OpenSSL as a shared library) for the grpc tests.

Service recap.Test, no protobuf (requests and answers are raw bytes):
  Unary   b"ok" -> OK, b"not_found" -> NOT_FOUND, b"unavailable" -> UNAVAILABLE,
          b"slow" -> answers after 1 s (a client with a shorter deadline sees DEADLINE_EXCEEDED)
  Stream  b"N"  -> N messages (server streaming)
  Upload  a stream of messages -> their count (client streaming)
Usage: server.py PORT [CERT KEY]   (with CERT and KEY: TLS). Prints "ready" once listening.
"""
import sys
import time
from concurrent import futures

import grpc


def unary(request, context):
    if request == b"not_found":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if request == b"unavailable":
        context.abort(grpc.StatusCode.UNAVAILABLE, "try later")
    if request == b"slow":
        time.sleep(1)
    return b"ok"


def stream(request, context):
    for i in range(int(request)):
        yield b"%d" % i


def upload(requests, context):
    return b"%d" % sum(1 for _ in requests)


def main():
    port = int(sys.argv[1])
    handler = grpc.method_handlers_generic_handler(
        "recap.Test",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Upload": grpc.stream_unary_rpc_method_handler(upload),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    address = f"127.0.0.1:{port}"
    if len(sys.argv) > 3:
        key = open(sys.argv[3], "rb").read()
        cert = open(sys.argv[2], "rb").read()
        server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
    else:
        server.add_insecure_port(address)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


main()
