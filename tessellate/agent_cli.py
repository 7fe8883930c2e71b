"""`tessellate agent ...`: the node agent (a kubelet device plugin) and GPU discovery.

    tessellate agent run --node-name NODE [--mode fractions|full] [--fake GPUS.yaml] ...
    tessellate agent discover [--json] [--fake GPUS.yaml]

Exit status: 0 done (or stopped by SIGTERM/SIGINT), 1 the GPUs could not be
discovered (the reason is one line on stderr), 2 a mistake in the command.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

EPILOG_RUN = """\
what it does:
  Serves the kubelet's device-plugin API (v1beta1) on unix sockets in
  --device-plugin-dir and registers with the kubelet there (again after every
  kubelet restart):
    tessellate.dev/gpu-milli   1000 devices per GPU (fractions: 1..999 of one GPU)
    nvidia.com/gpu             1 device per GPU, only with --mode full, which
                               replaces NVIDIA's device plugin on this node
    nvidia.com/mig-<profile>   1 device per MIG instance (ID = its MIG UUID),
                               only with --mode full, every profile of the
                               node's MIG-capable GPU models
  Allocate gives each container exactly the GPUs in its pod's
  tessellate.dev/assignment annotation (written by the scheduler), as
  NVIDIA_VISIBLE_DEVICES (or CDI names), plus CUDA MPS limits for fractions.
  The annotation is honoured only on pods with spec.schedulerName equal to
  --scheduler-name; other pods get what the kubelet picked. Nothing another
  live pod holds (a GPU, a share of one, a MIG device) is handed out twice.
  It also writes on its Node: the tessellate.dev/gpu-topology and
  tessellate.dev/gpu-devices annotations, and tessellate.dev/gpu-memory-mib as
  an extended resource (capacity and allocatable). A GPU with a critical Xid,
  or all GPUs when discovery fails, are reported Unhealthy to the kubelet.
  With --mig-dynamic it applies the scheduler's tessellate.dev/mig-plan node
  annotation (enable MIG mode, create instances; never destroy one) and
  answers in tessellate.dev/mig-plan-status. With --mps-daemon it runs and
  supervises the CUDA MPS control daemon that enforces fractions' limits.

examples:
  # in the DaemonSet (manifests/agent/): node name from the downward API
  tessellate agent run --node-name "$NODE_NAME" --mode fractions

  # a simulated node against a test cluster, no GPU needed
  tessellate agent run --kubeconfig K --node-name gpu-node-1 --fake gpus.yaml \\
      --device-plugin-dir /tmp/dp --mode full

  # whole GPUs, MIG instances and fractions, MIG layouts planned by the
  # scheduler, MPS enforcing the fractions
  tessellate agent run --node-name "$NODE_NAME" --mode full --mig-dynamic \\
      --mps-daemon --mps-pipe-dir /run/nvidia/mps

See docs/agent.md for the fake GPU file, MPS and RBAC.
"""

EPILOG_DISCOVER = """\
examples:
  tessellate agent discover                # table: model, UUID, memory, MIG, NUMA, NVLink
  tessellate agent discover --json         # everything NVML told us, as JSON
  tessellate agent discover --fake gpus.yaml --json

Also prints the tessellate.dev/gpu-topology annotation the agent would publish
(--json: key "annotation"). Exit status 1 with one line on stderr when NVML
cannot be used (no driver, no permission, ...).
"""


EPILOG_AGENT = """\
examples:
  tessellate agent discover --json                     # what NVML sees on this node
  tessellate agent run --node-name "$NODE_NAME"        # the DaemonSet's command (manifests/agent/)
  tessellate agent run --help                          # what the agent serves and publishes

docs/agent.md explains the device IDs, how Allocate finds the pod, MPS, RBAC.
"""


class AgentUsageError(Exception):
    """A mistake in how the command was called."""


def _duration(text: str) -> float:
    from tessellate.scheduler.config import ConfigError, parse_duration

    try:
        return parse_duration(text, "interval")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_agent_command(subparsers: argparse._SubParsersAction) -> None:
    agent = subparsers.add_parser(
        "agent",
        help="run the node agent (kubelet device plugin) or show what GPUs a node has",
        description="Tessellate's node agent: a kubelet device plugin that hands pods the GPUs "
        "the scheduler chose, and publishes the node's GPU inventory and topology.",
        epilog=EPILOG_AGENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = agent.add_subparsers(dest="agent_command", required=True, metavar="SUBCOMMAND")

    run = commands.add_parser(
        "run",
        help="serve the device plugins and publish the node's GPUs (what the DaemonSet runs)",
        description="Run the node agent on this node.",
        epilog=EPILOG_RUN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--node-name", default=None, help="this node's name (default: $NODE_NAME)")
    run.add_argument(
        "--scheduler-name",
        default="tessellate",
        metavar="NAME",
        help="the Tessellate scheduler's schedulerName: only pods with this spec.schedulerName have "
        "their tessellate.dev/assignment honoured (default tessellate)",
    )
    run.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)"
    )
    run.add_argument(
        "--mode",
        choices=("fractions", "full"),
        default="fractions",
        help="fractions: serve tessellate.dev/gpu-milli only; full: also nvidia.com/gpu (default fractions)",
    )
    _backend_options(run)
    run.add_argument(
        "--device-plugin-dir",
        type=Path,
        default=Path("/var/lib/kubelet/device-plugins"),
        metavar="DIR",
        help="the kubelet's device-plugin directory (default /var/lib/kubelet/device-plugins)",
    )
    run.add_argument(
        "--device-list-strategy",
        choices=("envvar", "cdi"),
        default="envvar",
        help="how containers are told their GPUs: NVIDIA_VISIBLE_DEVICES or CDI device names",
    )
    run.add_argument(
        "--mps-pipe-dir",
        default="",
        metavar="DIR",
        help="host directory of the CUDA MPS control daemon's pipes, mounted into fractional "
        "containers (default: none; the MPS limits are then only set, not enforced)",
    )
    run.add_argument(
        "--mps-daemon",
        action="store_true",
        help="start nvidia-cuda-mps-control -d with --mps-pipe-dir, restart it when it dies, "
        "and stop it (quit) when the agent stops",
    )
    run.add_argument(
        "--mps-control-binary",
        default="nvidia-cuda-mps-control",
        metavar="PATH",
        help="the MPS control program, a name on $PATH or a path (default nvidia-cuda-mps-control)",
    )
    run.add_argument(
        "--mps-log-dir",
        default="/var/log/nvidia-mps",
        metavar="DIR",
        help="CUDA_MPS_LOG_DIRECTORY for the daemon started by --mps-daemon (default /var/log/nvidia-mps)",
    )
    run.add_argument(
        "--mps-quit-on-exit",
        action="store_true",
        help="quit the MPS control daemon when the agent stops (default: leave it running, since "
        "quitting also ends the MPS servers of running fractional pods; the next agent adopts it)",
    )
    run.add_argument(
        "--mig-dynamic",
        action="store_true",
        help="apply the scheduler's MIG plans (node annotation tessellate.dev/mig-plan): enable MIG "
        "mode on idle GPUs and create the planned instances; needs --mode full",
    )
    run.add_argument(
        "--mig-plan-poll",
        type=_duration,
        default=1.0,
        metavar="DURATION",
        help="how often to look at the Node for a new MIG plan, with --mig-dynamic (default 1s)",
    )
    run.add_argument(
        "--rediscover-interval",
        type=_duration,
        default=60.0,
        metavar="DURATION",
        help="read the GPUs again this often; if NVML fails, every GPU is reported Unhealthy (default 60s)",
    )
    run.add_argument(
        "--resync-interval",
        type=_duration,
        default=60.0,
        metavar="DURATION",
        help="re-check the Node object's annotations and capacity this often (default 60s)",
    )
    run.add_argument(
        "--kubelet-poll",
        type=_duration,
        default=1.0,
        metavar="DURATION",
        help="how often to look for a restarted kubelet (default 1s)",
    )
    run.add_argument("-v", "--verbose", action="count", default=0, help="-v info (default), -vv debug")

    discover = commands.add_parser(
        "discover",
        help="print the GPUs, MIG state, NUMA nodes and NVLink matrix of this node",
        description="Discover this node's GPUs the way the agent does, and print them.",
        epilog=EPILOG_DISCOVER,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _backend_options(discover)
    discover.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fake",
        type=Path,
        metavar="GPUS.yaml",
        help="read the GPUs from this YAML description instead of NVML (tests, simulated nodes; "
        "see docs/agent.md)",
    )


def _backend(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    if args.fake:
        from tessellate.agent.fake import FakeBackend

        return FakeBackend(args.fake)
    from tessellate.agent.nvml import NvmlBackend

    return NvmlBackend()


def run_agent_command(args: argparse.Namespace) -> int:
    from tessellate.agent.discovery import DiscoveryError
    from tessellate.agent.mps import MpsError
    from tessellate.agent.plugin import SocketPathError

    errors = Console(stderr=True, soft_wrap=True)
    try:
        if args.agent_command == "discover":
            return _discover(args)
        return _run(args)
    except (DiscoveryError, MpsError, SocketPathError) as exc:
        errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 1
    except AgentUsageError as exc:
        errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2


def _discover(args: argparse.Namespace) -> int:
    from tessellate.agent.annotation import topology_annotation
    from tessellate.placement.topology import TopologyError

    backend = _backend(args)
    try:
        inventory = backend.discover()
    finally:
        backend.close()
    try:
        annotation: dict | None = topology_annotation(inventory)
        problem = None
    except TopologyError as exc:
        annotation, problem = None, str(exc)
    if args.json:
        doc = inventory.to_json()
        doc["annotation"] = annotation
        if problem:
            doc["annotation_error"] = problem
        print(json.dumps(doc, indent=2))
        return 0
    out = Console(width=160, soft_wrap=True) if not sys.stdout.isatty() else Console(soft_wrap=True)
    table = Table(
        title=f"{len(inventory.gpus)} GPUs via {inventory.source} (driver {inventory.driver_version})"
    )
    for column in ("index", "model", "uuid", "memory MiB", "NUMA", "PCIe switch", "MIG"):
        table.add_column(column)
    for g in inventory.gpus:
        mig = (
            "off" if not g.mig_enabled else ", ".join(f"{m.profile}@{m.start}" for m in g.mig) or "on, empty"
        )
        table.add_row(str(g.index), g.model, g.uuid, str(g.memory_mib), str(g.numa), str(g.pcie_switch), mig)
    out.print(table)
    if inventory.nvswitch_links:
        out.print(f"NVSwitch fabric: NVLinks per GPU {list(inventory.nvswitch_links)}")
    if inventory.nvlink:
        out.print("direct NVLinks (GPU x GPU):")
        for i, row in enumerate(inventory.nvlink):
            out.print(f"  GPU{i}: " + " ".join(f"{n:3d}" for n in row))
    out.print(f"NVLink generation {inventory.nvlink_generation}, PCIe generation {inventory.pcie_generation}")
    if annotation is not None:
        out.print("tessellate.dev/gpu-topology: " + escape(json.dumps(annotation, separators=(",", ":"))))
    else:
        out.print(f"[yellow]no topology annotation:[/] {escape(problem or '')}")
    return 0


def _mps(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The MPS daemon to supervise (--mps-daemon), or None."""
    from tessellate.agent.mps import MpsDaemon

    if args.mps_pipe_dir and not args.mps_pipe_dir.startswith("/"):
        raise AgentUsageError(f"--mps-pipe-dir must be an absolute host path, got {args.mps_pipe_dir!r}")
    if not args.mps_daemon:
        return None
    if not args.mps_pipe_dir:
        raise AgentUsageError("--mps-daemon needs --mps-pipe-dir (where the daemon's pipes go)")
    return MpsDaemon(
        args.mps_control_binary,
        Path(args.mps_pipe_dir),
        Path(args.mps_log_dir),
        quit_on_exit=args.mps_quit_on_exit,
    )


def _run(args: argparse.Namespace) -> int:
    import os

    from tessellate.agent.agent import Agent, AgentConfig
    from tessellate.agent.responses import RuntimeOptions
    from tessellate.kube import KubeClient

    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    node = args.node_name or os.environ.get("NODE_NAME", "")
    if not node:
        raise AgentUsageError("give --node-name or set $NODE_NAME (the DaemonSet sets it from spec.nodeName)")
    try:
        config = AgentConfig(
            node_name=node,
            mode=args.mode,
            device_plugin_dir=args.device_plugin_dir,
            poll_seconds=args.kubelet_poll,
            rediscover_seconds=args.rediscover_interval,
            resync_seconds=args.resync_interval,
            mig_dynamic=args.mig_dynamic,
            mig_plan_poll_seconds=args.mig_plan_poll,
            mps=_mps(args),
            scheduler_name=args.scheduler_name,
            runtime=RuntimeOptions(
                device_list_strategy=args.device_list_strategy, mps_pipe_dir=args.mps_pipe_dir
            ),
        )
    except ValueError as exc:
        raise AgentUsageError(str(exc)) from None
    from kubernetes.config import ConfigException

    try:
        api = KubeClient.from_kubeconfig(args.kubeconfig)
    except (ConfigException, OSError) as exc:
        raise AgentUsageError(f"cannot reach the API server: {exc}") from None
    agent = Agent(config, _backend(args), api)

    def stop(signum: int, _frame: object) -> None:
        logging.getLogger("tessellate.agent").info("signal %d: stopping", signum)
        agent.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        agent.start()
    except Exception:
        agent.stop()  # sockets already served go away with it
        raise
    try:
        while not agent.stopping.wait(3600):
            pass
    finally:
        agent.stop()
        api.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """`tessellate agent` on its own (also `python -m tessellate.agent_cli`)."""
    parser = argparse.ArgumentParser(prog="tessellate")
    add_agent_command(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(["agent", *(argv if argv is not None else sys.argv[1:])])
    return run_agent_command(args)


if __name__ == "__main__":
    sys.exit(main())
