"""The committed gRPC stubs are exactly what grpcio-tools makes from our .proto, and speak
the kubelet's wire names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tessellate.agent.proto import API_VERSION
from tessellate.agent.proto import deviceplugin_pb2 as pb
from tessellate.agent.proto.generate import PROTO, RELATIVE, ROOT, STUBS


def test_regenerating_the_stubs_changes_nothing(tmp_path: Path) -> None:
    # In a fresh process: grpc_tools' protoc and ortools each carry a protobuf library, and
    # loading both into one process (as the rest of the suite does) can crash it.
    subprocess.run(
        [sys.executable, "-m", "tessellate.agent.proto.generate", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    paths = [tmp_path / RELATIVE.parent / name for name in STUBS]
    committed = PROTO.parent
    stale = [p.name for p in paths if p.read_text() != (committed / p.name).read_text()]
    assert not stale, (
        f"{', '.join(stale)} differ from what grpcio-tools makes of deviceplugin.proto; "
        "run: python -m tessellate.agent.proto.generate"
    )
    assert sorted(p.name for p in paths) == sorted(STUBS)


def test_services_have_the_kubelets_fully_qualified_names() -> None:
    services = pb.DESCRIPTOR.services_by_name
    assert pb.DESCRIPTOR.package == API_VERSION == "v1beta1"
    assert [m.full_name for m in services["Registration"].methods] == ["v1beta1.Registration.Register"]
    assert [m.name for m in services["DevicePlugin"].methods] == [
        "GetDevicePluginOptions",
        "ListAndWatch",
        "GetPreferredAllocation",
        "Allocate",
        "PreStartContainer",
    ]
    assert services["DevicePlugin"].methods_by_name["ListAndWatch"].server_streaming


def test_field_numbers_match_the_upstream_api() -> None:
    def numbers(message: type) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}

    assert numbers(pb.RegisterRequest) == {"version": 1, "endpoint": 2, "resource_name": 3, "options": 4}
    assert numbers(pb.Device) == {"ID": 1, "health": 2, "topology": 3}
    assert numbers(pb.ContainerPreferredAllocationRequest) == {
        "available_deviceIDs": 1,
        "must_include_deviceIDs": 2,
        "allocation_size": 3,
    }
    assert numbers(pb.ContainerAllocateResponse) == {
        "envs": 1,
        "mounts": 2,
        "devices": 3,
        "annotations": 4,
        "cdi_devices": 5,
    }
    assert numbers(pb.DevicePluginOptions) == {
        "pre_start_required": 1,
        "get_preferred_allocation_available": 2,
    }
