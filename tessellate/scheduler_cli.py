"""`tessellate scheduler`: run the live secondary scheduler against a cluster."""

from __future__ import annotations

import argparse
import logging

from kubernetes.config import ConfigException
from rich.console import Console

EPILOG = """\
examples:
  tessellate scheduler --kubeconfig ~/.kube/config          # all defaults: FGD, leader election on
  tessellate scheduler --kubeconfig K --config config.yaml  # settings from a file
  tessellate scheduler --kubeconfig K --policy bestfit --leader-elect=false --bind-address 127.0.0.1:10259

Pods opt in with spec.schedulerName: tessellate and ask for GPUs with
nvidia.com/gpu (whole GPUs), tessellate.dev/gpu-milli (a share of one GPU,
1..999) or nvidia.com/mig-<profile>. The decision is written on the pod as the
annotation tessellate.dev/assignment. Inside a pod (no --kubeconfig) the pod's
service account is used. Metrics: http://BIND_ADDRESS/metrics, probes /healthz
and /readyz. Command-line flags override the config file.
"""


def add_scheduler_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "scheduler",
        help="run the live Kubernetes scheduler",
        description="Bind pending pods with spec.schedulerName=tessellate to nodes and GPUs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)"
    )
    p.add_argument("--config", metavar="PATH", help="YAML config (see manifests/ for an example)")
    p.add_argument("--policy", help="placement policy, overrides the config (default fgd)")
    p.add_argument("--scheduler-name", help="schedule pods with this spec.schedulerName (default tessellate)")
    p.add_argument("--bind-address", metavar="HOST:PORT", help="metrics and probes (default 0.0.0.0:10259)")
    p.add_argument(
        "--leader-elect",
        type=_bool,
        metavar="true|false",
        help="take part in Lease leader election (default true)",
    )
    p.add_argument("--lease-duration", metavar="DURATION", help="e.g. 15s (kube-scheduler's default)")
    p.add_argument("--renew-deadline", metavar="DURATION", help="e.g. 10s")
    p.add_argument("--retry-period", metavar="DURATION", help="e.g. 2s")
    p.add_argument("--identity", help="leader-election identity (default <hostname>_<uuid>)")
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info is default, -vv debug)"
    )


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def run_scheduler_command(args: argparse.Namespace) -> int:
    from tessellate.scheduler.config import ConfigError, load_config, parse_duration

    errors = Console(stderr=True)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
        if args.policy:
            config.policy = args.policy
        if args.scheduler_name:
            config.schedulerName = args.scheduler_name
        if args.bind_address:
            config.bindAddress = args.bind_address
        le = config.leaderElection
        if args.leader_elect is not None:
            le.leaderElect = args.leader_elect
        for flag, attr in (
            ("lease_duration", "leaseDuration"),
            ("renew_deadline", "renewDeadline"),
            ("retry_period", "retryPeriod"),
        ):
            if getattr(args, flag):
                setattr(le, attr, parse_duration(getattr(args, flag), "--" + flag.replace("_", "-")))
        config.validate()
    except ConfigError as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2

    from tessellate.kube import KubeClient
    from tessellate.scheduler.app import Scheduler

    try:
        api = KubeClient.from_kubeconfig(
            args.kubeconfig, qps=config.clientConnection.qps, burst=config.clientConnection.burst
        )
    except (ConfigException, OSError) as exc:
        errors.print(f"[bold red]error:[/] cannot load Kubernetes credentials: {exc}", highlight=False)
        return 2
    try:
        scheduler = Scheduler(api, config, identity=args.identity)
    except OSError as exc:
        errors.print(
            f"[bold red]error:[/] cannot serve metrics on {config.bindAddress}: {exc}", highlight=False
        )
        return 2
    scheduler.install_signal_handlers()
    return scheduler.run()
