"""Shared pytest fixtures: the sandbox control plane (one per test session) and its clients.

Tests always run on a sandbox of their own, in the state folder `sandbox-tests` beside the
default one, never on the sandbox `make sandbox` / `edgemodel sandbox demo` left running: that
one's operator watches every namespace (it would reconcile the tests' EdgeModels alongside
the tests' own operator) and its GPU pod holds the fleet's only amd64 GPU. Two control planes
plus the pod runners on a 2-core machine (and the one real node a machine can have) do not
coexist reliably either, so a running default sandbox is taken down first, with a notice
on the terminal. Test sessions running at once share the tests' sandbox; the last one to
finish tears it down (set EDGEMODEL_KEEP_SANDBOX=1 to keep it; the next session reuses a
healthy one).

`make test` runs the suite on several xdist workers (`--dist loadgroup`). Each worker that
needs the tests' sandbox brings up its own (`sandbox-tests`, `sandbox-tests-gw1`, ...: free
ports, own state), and `pytest_collection_modifyitems` below puts the tests into groups so a
group's session fixtures are made once: the end-to-end files on one sandbox, the other
sandbox tests on another, the tests that bring up control planes (and the machine's one real
node) of their own together, the image tests together (qemu's binfmt registration is
machine-wide), each other integration module whole. The groups are queued first,
longest first, so the many short unit tests fill the other workers meanwhile
(docs/architecture.md, "Tests").
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD_PATH = ROOT / "crds" / "edgemodel.yaml"


@dataclass
class Cluster:
    """A running sandbox, as the tests see it."""

    kubeconfig: Path
    kubectl_path: Path
    prometheus_url: str | None
    sandbox: Any

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


def processes_mentioning(text: str) -> list[str]:
    """Command lines of this machine's processes that contain `text` (to prove none is left)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{proc.name}: {cmdline[:200]}")
    return found


TEST_SANDBOX = "sandbox-tests"


def sandbox_dir_for_tests() -> Path:
    """Where the tests' own sandbox lives: `sandbox-tests` beside the default state folder,
    `sandbox-tests-gw1`, ... for the second and later xdist workers."""
    from edgemodel_sandbox.cluster import state_dir

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    suffix = "" if worker == "gw0" else f"-{worker}"
    return state_dir().with_name(TEST_SANDBOX + suffix)


def take_down_default_sandbox(say: Callable[[str], None]) -> bool:
    """Stop the default (demo) sandbox if one is there; True when it was. `say`s so first."""
    from edgemodel_sandbox.cluster import Sandbox

    default = Sandbox.default()
    if default.directory == sandbox_dir_for_tests() or default.state() is None:
        return False
    say(
        f"NOTICE: taking down the sandbox in {default.directory} (e.g. `make sandbox`'s demo) "
        f"so the tests run alone on their own sandbox in {sandbox_dir_for_tests()}; "
        "`make sandbox` brings the demo back."
    )
    default.down()
    return True


@pytest.fixture(scope="session")
def no_demo_sandbox(request: pytest.FixtureRequest) -> None:
    """No default (demo) sandbox runs beside the tests' own control planes."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def say(text: str) -> None:  # on the terminal, past pytest's output capture
        with capture.global_and_fixture_disabled():
            sys.stderr.write(f"\n{text}\n")
            sys.stderr.flush()

    from edgemodel_sandbox.cluster import state_dir
    from edgemodel_sandbox.files import locked

    # xdist workers start together: one takes the demo down, the others then find none.
    with locked(state_dir().with_name(".take-down-demo.lock")):
        take_down_default_sandbox(say)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class SandboxLease:
    """Which test sessions use the tests' sandbox, so concurrent sessions share it safely.

    Each session leaves a file named by its pid in `<sandbox-tests>.users/`; the session that
    brought the sandbox up leaves `started` too. The last session to leave takes the sandbox
    down if a session started it (not if one was kept with EDGEMODEL_KEEP_SANDBOX=1): a
    session that ends first never pulls the control plane from under another one.
    """

    folder: Path

    def join(self, started: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / str(os.getpid())).touch()
        if started:
            (self.folder / "started").touch()

    def others(self) -> list[int]:
        """Live sessions besides this one (files of sessions that died are removed)."""
        alive = []
        for path in self.folder.iterdir():
            if not path.name.isdigit() or int(path.name) == os.getpid():
                continue
            if _alive(int(path.name)):
                alive.append(int(path.name))
            else:
                path.unlink(missing_ok=True)
        return alive

    def leave(self) -> bool:
        """Leave; True when this was the last session of a sandbox a session started."""
        (self.folder / str(os.getpid())).unlink(missing_ok=True)
        if self.others():
            return False
        started = self.folder / "started"
        last = started.exists()
        started.unlink(missing_ok=True)
        return last


@pytest.fixture(scope="session")
def cluster(no_demo_sandbox: None) -> Iterator[Cluster]:
    from edgemodel_sandbox.cluster import Sandbox
    from edgemodel_sandbox.tools import Tools, tools_dir

    sandbox = Sandbox(sandbox_dir_for_tests())
    lease = SandboxLease(sandbox.directory.with_name(f"{sandbox.directory.name}.users"))
    started = not sandbox.healthy()
    lease.join(started)
    try:
        sandbox.up()
        yield Cluster(
            sandbox.kubeconfig, Tools.at(tools_dir()).kubectl, sandbox.prometheus_url(), sandbox
        )
    finally:
        if lease.leave() and os.environ.get("EDGEMODEL_KEEP_SANDBOX") != "1":
            sandbox.down()


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> dict[str, Any]:
    """The EdgeModel CRD from crds/, installed and Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/edgemodels.edgemodel.dev", "--timeout=60s"
    )
    # Discovery can lag Established by a moment; kubectl get proves the resource is served.
    deadline = time.monotonic() + 30
    while cluster.kubectl("get", "edgemodels", "-A", check=False).returncode != 0:
        assert time.monotonic() < deadline, (
            "edgemodels not served 30 s after the CRD was Established"
        )
        time.sleep(0.5)
    loaded: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return loaded


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


# Groups for `pytest -n N --dist loadgroup`, queued in this order (longest first).
GROUP_ORDER = ("sandbox-e2e", "own-sandbox", "sandbox", "image", "integration", "unit")


def _group_of(item: pytest.Item) -> str:
    """The xdist group of a test: which sandbox it shares, or its module (docstring above)."""
    path = Path(str(item.fspath)).relative_to(ROOT / "tests")
    if item.get_closest_marker("own_sandbox") is not None:
        return "own-sandbox"
    if "cluster" in getattr(item, "fixturenames", ()):
        return "sandbox-e2e" if path.parts[0] == "e2e" else "sandbox"
    if path.parts[0] == "unit":
        return "unit"
    if path.parts[:2] == ("integration", "image"):  # one binfmt registration, one image build
        return "image"
    return f"integration:{path.as_posix()}"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into scopes
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    groups = {id(item): _group_of(item) for item in items}

    def rank(item: pytest.Item) -> int:
        return GROUP_ORDER.index(groups[id(item)].split(":")[0])

    items.sort(key=rank)  # stable: within a group, the collection order stays
    for item in items:
        group = groups[id(item)]
        if group != "unit":  # unit tests stay single work units that fill the gaps
            item.add_marker(pytest.mark.xdist_group(name=group))
