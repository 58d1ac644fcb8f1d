"""The `edgemodel serve` runtime: a KServe v2 / Triton-protocol ONNX Runtime server.

Layers (each module owns one): `protocol_http` and `protocol_grpc` speak the wire protocols;
`dataplane` validates requests against the model, batches them, owns the server's state
(`ServerState`: loading -> ready -> leaving -> draining -> closed) and the one instrumented
inference path both protocols call (`DataPlane.instrumented`); `model` is the only module
that touches onnxruntime; `metrics` owns the Prometheus registry observed around the dataplane;
`server` wires them together and owns the process lifecycle (load, warm-up, ready, drain).
"""
