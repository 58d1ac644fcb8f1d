"""What runs in the runtime image: the compressor, the KServe v2 server, the artifact store."""

__version__ = "0.1.0"
