"""The admin's monitoring, tested for real: Debian's `prometheus` scrapes running schedulers
on the test API server with manifests/monitoring/alerts.yaml loaded; every panel of
manifests/monitoring/grafana-dashboard.json must return data, and each alert must fire in
the situation staged for it (and not before).

Prometheus comes from `scripts/prometheus path` (apt-get on first use); the test runs its own
process with its own config, storage and loopback port, so the package's service never
matters."""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from tessellate.scheduler.metrics import UnschedulableCollector, unschedulable_reasons
from tessellate.scheduler.nodes import gpu_model_name

from integration import cluster, rbac
from integration.schedproc import SchedulerProcess, free_port, wait_for
from integration.test_queues import QUEUES, Kubelet, queue_object
from tessellate.kube import ApiError, KubeClient
from tessellate.wire.devices import DEVICES

pytestmark = pytest.mark.integration

MONITORING = cluster.REPO / "manifests" / "monitoring"
ALERTS = MONITORING / "alerts.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
SCRIPT = cluster.REPO / "scripts" / "prometheus"
JOB = "tessellate-scheduler-metrics"
"""The job name the rules expect: the metrics Service's name, as a ServiceMonitor sets it."""
WHOLE, SHARED = "A30-24GB", "H800-80GB"
"""gpu.product labels (catalogue names) no other test uses: the per-model gauges are this test's
alone even on an API server that other tests left nodes on."""
RATE_INTERVAL = "1m"
"""What `$__rate_interval` stands for here (Grafana makes it at least 4 scrape intervals)."""
SHORT_FOR = "2s"
"""Every alert's `for:` in the live test, so a staged situation fires within seconds."""


# -- helpers: the rules file, the dashboard's queries, a Prometheus process ---------------------


def tool(which: str) -> str:
    """`scripts/prometheus path|promtool`: the binary's path, installed if missing."""
    result = subprocess.run([str(SCRIPT), which], capture_output=True, text=True, timeout=900)
    if result.returncode != 0 or not result.stdout.strip():
        pytest.fail(
            f"scripts/prometheus {which} could not provide Prometheus ({result.returncode}):\n"
            f"{result.stderr[-2000:]}\nInstall Debian's package (apt-get install prometheus, as root) "
            "or set TESSELLATE_PROMETHEUS to a prometheus binary with promtool next to it."
        )
    return result.stdout.strip().splitlines()[-1]


def rule_groups(overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """The PrometheusRule's `spec.groups` as a plain Prometheus rules file; `overrides`
    replaces alerts' `for:` (by alert name, "*" for all) so that tests need not wait."""
    rule = yaml.safe_load(ALERTS.read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    groups = rule["spec"]["groups"]
    for group in groups:
        for r in group["rules"]:
            if overrides and "alert" in r:
                r["for"] = overrides.get(r["alert"], overrides.get("*", r.get("for")))
    return {"groups": groups}


def alert_names() -> set[str]:
    return {r["alert"] for g in rule_groups()["groups"] for r in g["rules"] if "alert" in r}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel with queries, those inside collapsed rows too."""
    for panel in dash["panels"]:
        if panel.get("type") == "row":
            yield from panels({"panels": panel.get("panels") or []})
        else:
            yield panel


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation for what the dashboard uses: `$name`, `${name}`."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown variable ${name} in {expr!r}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


class Prometheus:
    """Our own prometheus process on a free loopback port, scraping `targets` every second
    and evaluating `rules` every second."""

    def __init__(self, binary: str, workdir: Path, targets: list[str], rules: dict[str, Any]):
        self.binary, self.workdir = binary, workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rules_path = workdir / "rules.yml"
        self.rules_path.write_text(yaml.safe_dump(rules, sort_keys=False))
        self.config_path = workdir / "prometheus.yml"
        self.write_config(targets)
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, targets: list[str]) -> None:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(self.rules_path)],
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": targets}] if targets else []}
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> Prometheus:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, 60, f"prometheus to be ready (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, f"prometheus exited ({self.proc.returncode}):\n{self.log()}"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def reload(self, targets: list[str]) -> None:
        """New scrape targets; SIGHUP makes prometheus reread its config."""
        assert self.proc is not None
        self.write_config(targets)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with the reason
            body = json.load(exc)
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector `expr` evaluates to now (a scalar comes back as one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", data
        return data["result"]

    def values(self, expr: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(expr)}

    def label_values(self, selector: str, label: str) -> list[str]:
        return self.api(f"label/{label}/values", **{"match[]": selector})

    def alerts(self, state: str = "firing") -> list[dict[str, str]]:
        """The labels of each alert in `state` (pending or firing)."""
        return [a["labels"] for a in self.api("alerts")["alerts"] if a["state"] == state]

    def firing(self, name: str) -> list[dict[str, str]]:
        return [labels for labels in self.alerts() if labels["alertname"] == name]


def variable_values(prom: Prometheus, dash: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """What each template variable stands for, resolved against Prometheus as Grafana does
    (`label_values(selector, label)`; a multi-value variable takes its "All" value), and the
    variables that resolve to nothing."""
    values = {"__rate_interval": RATE_INTERVAL, "__interval": "1s", "__range": RATE_INTERVAL}
    missing = []
    for var in dash["templating"]["list"]:
        name = var["name"]
        if var["type"] == "datasource":
            assert var["query"] == "prometheus"
            values[name] = "unused"  # only panels' datasource fields name it
            continue
        assert var["type"] == "query", var
        query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
        found = re.fullmatch(r"label_values\((.+), *(\w+)\)", substitute(query, values))
        assert found, f"variable {name}: unsupported query {query!r}"
        options = prom.label_values(found.group(1), found.group(2))
        if not options:
            missing.append(f"variable {name}: {query}")
        if var.get("includeAll"):
            values[name] = var.get("allValue") or "(" + "|".join(options) + ")"
        else:
            values[name] = options[0] if options else ""
    return values, missing


def empty_panels(prom: Prometheus, dash: dict[str, Any]) -> list[str]:
    """Each variable without values and each panel query that returns no sample (or only NaN
    samples), as `title: expr`."""
    values, empty = variable_values(prom, dash)
    for panel in panels(dash):
        for target in panel["targets"]:
            expr = substitute(target["expr"], values)
            samples = prom.query(expr)
            if not samples or all(math.isnan(float(s["value"][1])) for s in samples):
                empty.append(f"{panel['title']}: {expr}")
    return empty


# -- the static checks -------------------------------------------------------------------------


def test_the_rules_pass_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "tessellate-rules.yml"
    rules.write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
    result = subprocess.run([tool("promtool"), "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout + result.stderr
    assert alert_names() == {
        "TessellateSchedulerDown",
        "TessellateSchedulerAbsent",
        "TessellateNoLeader",
        "TessellatePodsPendingLong",
        "TessellateGpuFragmentationHigh",
    }


def test_the_dashboard_is_a_grafana_model_on_a_prometheus_datasource_variable() -> None:
    dash = dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    source = {"type": "prometheus", "uid": "${datasource}"}
    titles = [p["title"] for p in panels(dash)]
    assert len(titles) == len(set(titles)), "panel titles must be unique (the test reports by title)"
    for panel in panels(dash):
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == source and target["expr"].strip(), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
    exprs = " ".join(t["expr"] for p in panels(dash) for t in p["targets"])
    for wanted in (  # what the issue asks the dashboard to show
        "tessellate_gpu_allocation_ratio",
        "tessellate_gpu_fragmentation_ratio",
        "tessellate_pending_pods",
        "tessellate_unschedulable_pods",
        "tessellate_scheduling_algorithm_duration_seconds_bucket",
        "tessellate_binding_duration_seconds_count",
        "tessellate_binding_duration_seconds_bucket",
        "tessellate_preemption_victims_total",
        "tessellate_queue_reclaims_total",
        "tessellate_queue_allocated_gpus",
        "tessellate_queue_quota_gpus",
        "tessellate_queue_fair_share_gpus",
        "tessellate_leader",
    ):
        assert wanted in exprs, f"no panel shows {wanted}"


def test_the_kustomization_renders_the_monitoring_objects(control_plane: cluster.ControlPlane) -> None:
    """`kubectl kustomize manifests/monitoring`: the dashboard ConfigMap for Grafana's sidecar,
    the rules, and a ServiceMonitor that selects the metrics Service by its port name."""
    rendered = list(yaml.safe_load_all(control_plane.kubectl("kustomize", str(MONITORING)).stdout))
    by_kind = {doc["kind"]: doc for doc in rendered}
    assert sorted(by_kind) == ["ConfigMap", "PrometheusRule", "ServiceMonitor"]
    assert all(doc["metadata"]["namespace"] == rbac.NAMESPACE for doc in rendered)
    config_map = by_kind["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = config_map["data"].values()
    assert json.loads(content) == dashboard()
    assert by_kind["PrometheusRule"]["spec"] == yaml.safe_load(ALERTS.read_text())["spec"]

    service = yaml.safe_load((cluster.REPO / "manifests" / "service.yaml").read_text())
    monitor = by_kind["ServiceMonitor"]["spec"]
    selected = monitor["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items(), (selected, service["metadata"])
    assert service["metadata"]["namespace"] in monitor["namespaceSelector"]["matchNames"]
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["endpoints"]} <= ports
    assert service["metadata"]["name"] == JOB  # the job label the rules and dashboard use


# -- the live test -------------------------------------------------------------------------------


def create_nodes(api: KubeClient, group: str) -> list[str]:
    """Two 8-GPU nodes for the queues' whole-GPU pods, one 8-GPU node for fractions (to be
    fragmented) and one node whose inventory lists a GPU twice (quarantined)."""
    selector = {"group": group}
    made = []
    twice = {"index": 0, "health": "Healthy"}
    specs: list[tuple[str, str, dict[str, str]]] = [
        (f"{group}-whole-0", WHOLE, {}),
        (f"{group}-whole-1", WHOLE, {}),
        (f"{group}-shared-0", SHARED, {}),
        (f"{group}-bad", WHOLE, {DEVICES: json.dumps({"gpus": [twice, twice]})}),
    ]
    for name, product, notes in specs:
        labels = {**selector, "pool": "shared" if product == SHARED else "whole"}
        node, status = cluster.gpu_node(name, gpus=8, product=product, labels=labels, annotations=notes)
        cluster.create_node(api, node, status)
        made.append(name)
    return made


def queued(p: dict[str, Any], queue: str) -> dict[str, Any]:
    p["metadata"]["labels"] = {"tessellate.dev/queue": queue}
    return p


def lease_taken_by_someone_else(api: KubeClient, name: str) -> None:
    """A holder that never lets go: the standby stays a standby (no replica leads)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    spec = {"holderIdentity": "a-replica-that-hangs", "leaseDurationSeconds": 3600, "renewTime": now}
    api.patch(f"/apis/coordination.k8s.io/v1/namespaces/{rbac.NAMESPACE}/leases/{name}", {"spec": spec})


def is_leader(sched: SchedulerProcess) -> bool:
    try:
        return "\ntessellate_leader 1.0" in sched.metrics()
    except OSError:
        return False


def test_every_panel_returns_data_and_each_alert_fires_when_staged(
    admin: KubeClient, namespace: str, control_plane: cluster.ControlPlane, tmp_path: Path
) -> None:
    prometheus_binary = tool("path")
    kubeconfig = rbac.scheduler_kubeconfig(control_plane, tmp_path)  # applies manifests/: the CRD too
    control_plane.kubectl("wait", "--for=condition=Established", "crd/queues.tessellate.dev", "--timeout=60s")
    group = cluster.unique("mon")
    nodes = create_nodes(admin, group)
    qa, qb = cluster.unique("qa"), cluster.unique("qb")
    for q in (qa, qb):
        admin.post(QUEUES, queue_object(q, {"gpuModel": "*", "quota": 8}))
    # A schedulerName of its own: pods other tests left pending on this API server are not ours.
    scheduler = cluster.unique("tessellate-mon")
    on_whole = {"group": group, "pool": "whole"}
    on_shared = {"group": group, "pool": "shared", "nvidia.com/gpu.product": SHARED}
    whole4 = {"nvidia.com/gpu": "4", "cpu": "1"}
    # A pod that fits nowhere comes first, so that FGD's target workload (read from the pods at
    # start) has a whole GPU in it: the 600m pods will leave 400m on each shared GPU, which that
    # cannot use. The rest arrive once Prometheus watches, so that their binds, latencies and
    # reclaims are in its rates; the whole-GPU pod for the shared node comes after the 600m
    # ones took every GPU.
    nowhere = cluster.pod(
        "nowhere",
        namespace,
        scheduler=scheduler,
        limits={"nvidia.com/gpu": "1"},
        nodeSelector={"group": group, "pool": "none"},
    )
    cluster.create_pods(admin, [nowhere])
    first = [
        queued(
            cluster.pod(f"a-{i}", namespace, scheduler=scheduler, limits=whole4, nodeSelector=on_whole), qa
        )
        for i in range(4)
    ]
    first += [
        cluster.pod(
            f"frac-{i}",
            namespace,
            scheduler=scheduler,
            limits={"tessellate.dev/gpu-milli": "600"},
            nodeSelector=on_shared,
        )
        for i in range(8)
    ]
    later = [
        queued(
            cluster.pod(f"b-{i}", namespace, scheduler=scheduler, limits=whole4, nodeSelector=on_whole), qb
        )
        for i in range(2)
    ]
    later.append(
        cluster.pod(
            "whole-gpu",
            namespace,
            scheduler=scheduler,
            limits={"nvidia.com/gpu": "1"},
            nodeSelector=on_shared,
        )
    )

    lease = "tessellate-scheduler"  # the only Lease the RBAC rules let the scheduler use
    election = {"leaderElect": True, "leaseDuration": "4s", "renewDeadline": "3s", "retryPeriod": "0.5s"}
    schedulers = [
        SchedulerProcess(
            kubeconfig,
            tmp_path,
            name,
            schedulerName=scheduler,
            leaderElection={**election, "resourceName": lease},
        )
        for name in ("one", "two")
    ]
    prom = Prometheus(
        prometheus_binary,
        tmp_path,
        [f"127.0.0.1:{s.port}" for s in schedulers],
        rule_groups({"*": SHORT_FOR}),
    )
    try:
        for s in schedulers:
            s.start()
        wait_for(lambda: any(is_leader(s) for s in schedulers), 60, "a scheduler to lead")
        wait_for(lambda: all(_serves(s) for s in schedulers), 30, "both schedulers' /metrics")
        prom.start()
        wait_for(
            lambda: (
                prom.values(f'up{{job="{JOB}"}}', "instance")
                == {f"127.0.0.1:{s.port}": 1.0 for s in schedulers}
            ),
            30,
            "prometheus to scrape both schedulers",
        )
        cluster.create_pods(admin, first)

        def bound(prefix: str) -> list[str]:
            return [
                p["metadata"]["name"]
                for p in cluster.list_pods(admin, namespace)
                if p["metadata"]["name"].startswith(prefix) and p["spec"].get("nodeName")
            ]

        wait_for(
            lambda: len(bound("a-")) == 4 and len(bound("frac-")) == 8,
            60,
            "queue A to borrow both whole-GPU nodes",
        )
        with Kubelet(admin, namespace):  # deleted (reclaimed) pods go at once
            cluster.create_pods(admin, later)
            wait_for(lambda: len(bound("b-")) == 2, 90, "queue B's pods to bind after a reclaim")
        assert len(bound("a-")) == 2 and not bound("whole-") and not bound("nowhere")

        # Every panel's every query has data (rates need two scrapes after the binds).
        dash = dashboard()
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not empty_panels(prom, dash), 30, "every panel to have data")
        assert empty_panels(prom, dash) == []

        # ... and the numbers are the staged cluster's (once the last scrape saw the last bind).
        def settled(expr: str, label: str, expected: dict[str, float]) -> None:
            with contextlib.suppress(AssertionError):
                wait_for(lambda: prom.values(expr, label) == expected, 15, expr)
            assert prom.values(expr, label) == expected, expr

        shared, whole = gpu_model_name(SHARED), gpu_model_name(WHOLE)
        ours = f'job="{JOB}", model=~"{shared}|{whole}"'
        by_model = {shared: 8000.0, whole: 16000.0}  # the quarantined node is not counted
        settled(f"max by (model) (tessellate_gpu_capacity_milli{{{ours}}})", "model", by_model)
        settled(
            f"max by (model) (tessellate_gpu_allocation_ratio{{{ours}}})",
            "model",
            {shared: 0.6, whole: 1.0},
        )

        # Every shared GPU has 400m left, which the expected workload (whole GPUs) cannot use;
        # but the scheduler's expected workload is every shape it sees on this shared API server,
        # so other tests' leftover fraction pods may make part of it usable: most, not all, is
        # fragment then. The whole-GPU model has no idle GPU, so no fragment at all.
        def fragment(values: dict[str, float], most: float) -> bool:
            return values.get(whole) == 0 and most * 0.5 < values.get(shared, 0) <= most

        ratio = f"max by (model) (tessellate_gpu_fragmentation_ratio{{{ours}}})"
        milli = f"max by (model) (tessellate_gpu_fragmentation_milli{{{ours}}})"
        with contextlib.suppress(AssertionError):
            wait_for(lambda: fragment(prom.values(ratio, "model"), 1.0), 15, ratio)
        assert fragment(prom.values(ratio, "model"), 1.0), prom.values(ratio, "model")
        assert fragment(prom.values(milli, "model"), 3200), prom.values(milli, "model")
        unfit, unmatched = "Insufficient nvidia.com/gpu", "node(s) didn't match Pod's node affinity/selector"
        reasons = {unfit: 1.0, unmatched: 2.0}  # whole-gpu: both; nowhere: unmatched
        settled(f'max by (reason) (tessellate_unschedulable_pods{{job="{JOB}"}})', "reason", reasons)
        settled(
            f'max by (queue) (tessellate_pending_pods{{job="{JOB}", queue="unschedulable"}})',
            "queue",
            {"unschedulable": 2},
        )
        settled(f'max by (queue) (tessellate_queue_reclaims_total{{queue=~"{qa}|{qb}"}})', "queue", {qb: 2})
        settled("max(tessellate_preemption_victims_total)", "", {"": 2})
        settled(f'max by (queue) (tessellate_queue_borrowed_binds_total{{queue="{qa}"}})', "queue", {qa: 2})
        for metric, expected in (("allocated", 8), ("quota", 8)):
            selector = f'{{queue=~"{qa}|{qb}", gpu_model="{whole}"}}'
            query = f"max by (queue) (tessellate_queue_{metric}_gpus{selector})"
            settled(query, "queue", {qa: expected, qb: expected})
        settled(
            f'max by (node) (tessellate_node_inventory_problem{{node=~"{group}-.*"}})',
            "node",
            {f"{group}-bad": 1},
        )
        settled(f'sum(tessellate_leader{{job="{JOB}"}})', "", {"": 1})
        binds = prom.values(
            f'sum(max by (instance) (tessellate_binding_duration_seconds_count{{job="{JOB}"}}))', ""
        )
        assert binds == {"": 4 + 8 + 2}, binds  # a-*, frac-*, b-*

        # The alerts for what is wrong in the cluster fire; the ones for the scheduler do not.
        def firing_reasons() -> set[str]:
            return {a["reason"] for a in prom.firing("TessellatePodsPendingLong")}

        with contextlib.suppress(AssertionError):
            wait_for(lambda: firing_reasons() == {unfit, unmatched}, 30, "TessellatePodsPendingLong")
        assert firing_reasons() == {unfit, unmatched}
        wait_for(lambda: prom.firing("TessellateGpuFragmentationHigh"), 30, "TessellateGpuFragmentationHigh")
        fragmented = {a["model"] for a in prom.firing("TessellateGpuFragmentationHigh")}
        assert shared in fragmented and whole not in fragmented, fragmented
        healthy = {a["alertname"] for a in prom.alerts("firing") + prom.alerts("pending")}
        assert not healthy & {"TessellateSchedulerDown", "TessellateSchedulerAbsent", "TessellateNoLeader"}

        # The leader dies and its Lease is held by a hung replica: one target down, no leader.
        leader = next(s for s in schedulers if is_leader(s))
        standby = next(s for s in schedulers if s is not leader)
        leader.kill9()
        lease_taken_by_someone_else(admin, lease)
        wait_for(lambda: prom.firing("TessellateSchedulerDown"), 30, "TessellateSchedulerDown")
        assert [a["instance"] for a in prom.firing("TessellateSchedulerDown")] == [f"127.0.0.1:{leader.port}"]
        wait_for(lambda: prom.firing("TessellateNoLeader"), 30, "TessellateNoLeader")
        assert _serves(standby) and not is_leader(standby)  # down and leaderless are different alerts

        # No target at all (the ServiceMonitor selects nothing): absent.
        standby.stop()
        prom.reload([])
        wait_for(lambda: prom.firing("TessellateSchedulerAbsent"), 30, "TessellateSchedulerAbsent")
        assert prom.firing("TessellateNoLeader"), "no scheduler at all is also no leader"
    except AssertionError:
        print("prometheus log:\n" + prom.log() if prom.log_path.exists() else "prometheus never started")
        for s in schedulers:
            if s.log_path.exists():
                print(f"scheduler {s.identity} log (tail):\n{s.log()[-3000:]}")
        raise
    finally:
        prom.stop()
        for s in schedulers:
            s.stop()
        for q in (qa, qb):
            with contextlib.suppress(ApiError):
                admin.delete(f"{QUEUES}/{q}")
        with contextlib.suppress(ApiError):
            admin.delete(f"/apis/coordination.k8s.io/v1/namespaces/{rbac.NAMESPACE}/leases/{lease}")
        with contextlib.suppress(ApiError):  # no kubelet to finish a graceful delete: at once
            gone = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}
            admin.delete(f"/api/v1/namespaces/{namespace}/pods", gone)
        for name in nodes:
            with contextlib.suppress(ApiError):
                admin.delete(f"/api/v1/nodes/{name}")


def _serves(sched: SchedulerProcess) -> bool:
    try:
        return "tessellate_leader" in sched.metrics()
    except OSError:
        return False


def test_substitute_replaces_grafana_variables() -> None:
    values = {"job": "j", "__rate_interval": "1m"}
    assert substitute('rate(x{job=~"$job"}[$__rate_interval])', values) == 'rate(x{job=~"j"}[1m])'
    assert substitute("${job}", values) == "j"
    with pytest.raises(AssertionError):
        substitute("$nope", values)


def test_unschedulable_reasons_take_few_values() -> None:
    """The reason label drops node counts and usage numbers, so it does not churn."""
    fit = "0/9 nodes are available: 3 Insufficient cpu, 6 node(s) had untolerated taint {a: b}."
    assert unschedulable_reasons(fit) == ["Insufficient cpu", "node(s) had untolerated taint {a: b}"]
    limit = (
        "0/4 nodes are available: 2 Insufficient nvidia.com/gpu, 2 queue q: limit 16 nvidia.com/gpu "
        "(A30-24GB) reached (16 in use, pod asks 4)."
    )
    assert unschedulable_reasons(limit) == ["Insufficient nvidia.com/gpu", "queue limit"]
    group = "pod group ns/g: 2 pod(s) must run together and only 0 fit now; e.g. ns/x: " + fit
    assert unschedulable_reasons(group) == [
        "pod group",
        "Insufficient cpu",
        "node(s) had untolerated taint {a: b}",
    ]
    assert unschedulable_reasons("queue 'x' does not exist; create it or fix the pod's label") == ["queue"]
    assert unschedulable_reasons("limits.nvidia.com/gpu must be an integer") == ["other"]


def test_the_collector_counts_each_waiting_pod_once_per_reason() -> None:
    def pod(message: str | None, reason: str = "Unschedulable") -> dict[str, Any]:
        conditions = (
            []
            if message is None
            else [{"type": "PodScheduled", "status": "False", "reason": reason, "message": message}]
        )
        return {"status": {"conditions": conditions}}

    twice = "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient cpu."
    pods = [pod(twice), pod("0/1 nodes are available: 1 Insufficient cpu."), pod(None), pod("x", "Other")]
    (family,) = UnschedulableCollector(lambda: pods).collect()
    assert [(s.labels, s.value) for s in family.samples] == [({"reason": "Insufficient cpu"}, 2)]
    (broken,) = UnschedulableCollector(lambda: 1 / 0).collect()  # a scrape never raises
    assert broken.samples == []
