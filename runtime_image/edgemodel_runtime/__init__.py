"""What runs in the runtime image: the model compressor, the KServe v2 server and the artifact store."""

__version__ = "0.1.0"
