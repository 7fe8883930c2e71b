"""The kubelet device-plugin API (v1beta1): our `.proto` and the stubs grpcio-tools made from it.

The stubs are committed so that installing Tessellate needs no code generator;
`tests/agent/test_agent_proto.py` regenerates them into a temp dir and fails if the
result differs from what is committed. To regenerate after editing the
`.proto`: `python -m tessellate.agent.proto.generate`. This package imports
nothing on purpose, so the generator still runs when the stubs are missing.
"""

API_VERSION = "v1beta1"
"""What RegisterRequest.version says; the only version the kubelet accepts today."""
