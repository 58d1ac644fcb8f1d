"""Owns the real node's OCI registry: `distribution` (built from the Go module proxy) on the
bridge gateway with TLS from the sandbox CA and htpasswd (bcrypt) authentication; the push of
the runtime image from `make image` into it; the credentials file and the pull secret.
"""

from __future__ import annotations

import ctypes
import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from edgemodel_sandbox import pki
from edgemodel_sandbox.errors import EdgeModelSandboxError
from edgemodel_sandbox.realnode import plan


class RegistryError(EdgeModelSandboxError, RuntimeError):
    """The registry could not be set up, or an image not pushed into it."""


def bcrypt(password: str, cost: int = 10) -> str:
    """A bcrypt hash ($2b$) of `password` from the system's libcrypt (libxcrypt)."""
    try:
        lib = ctypes.CDLL("libcrypt.so.1")
    except OSError as exc:
        raise RegistryError(f"libcrypt.so.1 (bcrypt for the registry's htpasswd): {exc}") from exc
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2b$", cost, None, 0)
    hashed = lib.crypt(password.encode(), salt) if salt else None
    if not hashed or not hashed.startswith(b"$2b$"):
        raise RegistryError("libcrypt made no bcrypt hash")
    return str(hashed.decode())


def prepare(layout: plan.Layout, credentials: pki.PKI) -> str:
    """Writes the registry's config, htpasswd, TLS pair, client CA folder, the Docker config
    with its credentials and the pull-secret manifest; returns the password."""
    root = layout.registry_root
    (root / "storage").mkdir(parents=True, exist_ok=True)
    if layout.registry_credentials.exists():
        auths = json.loads(layout.registry_credentials.read_text())["auths"]
        password = str(auths[plan.REGISTRY]["password"])
    else:
        password = secrets.token_urlsafe(18)
    layout.htpasswd.write_text(f"{plan.REGISTRY_USER}:{bcrypt(password)}\n")
    serving = pki.issue(
        credentials,
        "registry",
        "edgemodel-sandbox-registry",
        sans=[plan.GATEWAY_IP, "127.0.0.1", "localhost"],
        server=True,
        client=False,
    )
    config = plan.registry_configuration(layout, serving.cert, serving.key, plan.REGISTRY)
    layout.registry_config.write_text(yaml.safe_dump(config))
    layout.certs.mkdir(exist_ok=True)
    shutil.copyfile(credentials.ca_cert, layout.certs / "ca.crt")
    layout.registry_credentials.write_text(
        json.dumps(plan.docker_config(plan.REGISTRY, plan.REGISTRY_USER, password), indent=2)
    )
    layout.registry_credentials.chmod(0o600)
    secret = plan.pull_secret(
        plan.PULL_SECRET,
        plan.PULL_SECRET_NAMESPACE,
        plan.REGISTRY,
        plan.REGISTRY_USER,
        password,
    )
    layout.pull_secret.write_text(yaml.safe_dump(secret))
    layout.pull_secret.chmod(0o600)
    return password


def push(layout: plan.Layout, archive: Path, reference: str, timeout: float = 900) -> float:
    """Copies every platform of the OCI archive into the registry; returns the seconds taken."""
    if shutil.which("skopeo") is None:
        raise RegistryError("skopeo is not installed (Debian package `skopeo`)")
    started = time.monotonic()
    result = subprocess.run(
        [
            "skopeo",
            "copy",
            "--all",
            "--quiet",
            f"--dest-authfile={layout.registry_credentials}",
            f"--dest-cert-dir={layout.certs}",
            f"oci-archive:{archive}",
            f"docker://{reference}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RegistryError(f"pushing {archive.name} to {reference}: {result.stderr.strip()}")
    return time.monotonic() - started
