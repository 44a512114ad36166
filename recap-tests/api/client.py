"""A client of the RECap agent's API written as another team would write one: Python, grpcio,
stubs generated from recap-agent/proto at run time, nothing else of RECap's.

Usage: client.py SOCKET PROTO_DIR STUB_DIR CGROUP SECONDS
Prints one JSON line per step: the options the agent describes, "armed" once the window counts,
then the window's final record (its summary parsed)."""
import json
import subprocess
import sys

socket, proto_dir, stub_dir, cgroup, seconds = sys.argv[1:6]
subprocess.run(
    [sys.executable, "-m", "grpc_tools.protoc", "-I", proto_dir,
     "--python_out", stub_dir, "--grpc_python_out", stub_dir, "recap/v1/agent.proto"],
    check=True,
)
sys.path.insert(0, stub_dir)

import grpc  # noqa: E402
from recap.v1 import agent_pb2 as api  # noqa: E402
from recap.v1 import agent_pb2_grpc as rpc  # noqa: E402


def say(**what):
    print(json.dumps(what), flush=True)


agent = rpc.AgentStub(grpc.insecure_channel("unix:" + socket))
options = agent.DescribeOptions(api.DescribeOptionsRequest())
say(
    step="options",
    families=[f.name for f in options.families],
    defaults=[f.name for f in options.families if f.on_by_default],
    tools=[t.name for t in options.capsule_tools],
    root=options.policy.root,
)

spec = api.WindowSpec(cgroup=cgroup, families=[api.FAMILY_PROC])
spec.duration.FromSeconds(int(seconds))
started = agent.StartWindow(api.StartWindowRequest(spec=spec))
say(step="armed", window_id=started.window_id)

record = agent.WaitWindow(api.WindowRef(window_id=started.window_id))
say(
    step="ended",
    status=api.WindowStatus.Name(record.status),
    command_line=list(record.command_line),
    families=[api.Family.Name(f) for f in record.spec.families],
    summary=json.loads(record.summary_json),
)

try:
    agent.StartWindow(api.StartWindowRequest(spec=api.WindowSpec(pid=1)))
except grpc.RpcError as e:
    say(step="refused", code=e.code().name, message=e.details())
