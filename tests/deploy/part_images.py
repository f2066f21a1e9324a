"""Images for the stack's other parts, built here from the tier's Debian base: no registry is reachable.

Each part has a ``images/<part>.Containerfile``. Caddy, pebble and Prometheus are Go binaries from
Debian's packages on the machine running the tier (``tests/deploy/run.sh`` installs them), copied in;
Redis and Ceph radosgw are installed from Debian inside the build; mongoeco runs on the machine's
pyenv Python 3.13. Two parts stand in for what has no package here and say so in their files:
radosgw for MinIO (a real S3 server: SigV4, multipart, presigned URLs) and mongoeco for MongoDB
(a wire-compatible server, so a green run means "consistent with mongoeco", not "works on MongoDB").

An image is tagged ``localhost/tuplehub-tier-<part>:<key>``, the key hashing everything that goes
into it (the base, the Containerfile, the copied files, the Python it copies), so a rerun finds it
and skips the build; the image a part's older key named is removed.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .podman import podman

HERE = Path(__file__).resolve().parent / "images"
PYENV = Path.home() / ".pyenv" / "versions"


@dataclass(frozen=True)
class Part:
    """What one part's build needs besides its Containerfile."""

    binaries: tuple[str, ...] = ()  # from the machine's PATH into the build context
    scripts: tuple[str, ...] = ()  # from images/ into the build context
    python313: bool = False  # mount pyenv's Python 3.13 at /python-src, copied to the same prefix


PARTS = {
    "caddy": Part(binaries=("caddy",)),
    "pebble": Part(binaries=("pebble",)),
    "prometheus": Part(binaries=("prometheus", "promtool")),
    "redis": Part(),
    "radosgw": Part(scripts=("radosgw-entrypoint.sh",)),
    "mongo": Part(scripts=("mongoeco_server.py",), python313=True),
}


def python313() -> Path:
    """pyenv's newest Python 3.13 on this machine (mongoeco needs 3.13 or later)."""
    found = sorted(PYENV.glob("3.13.*"), key=lambda p: tuple(int(x) for x in p.name.split(".") if x.isdigit()))
    if not found or not (found[-1] / "bin" / "python3.13").exists():
        raise AssertionError(f"no Python 3.13 under {PYENV} (pyenv install 3.13): mongoeco, the tier's "
                             "stand-in for MongoDB, needs it")
    return found[-1]


def _sources(name: str, part: Part) -> dict[str, Path]:
    files = {"Containerfile": HERE / f"{name}.Containerfile"}
    for binary in part.binaries:
        path = shutil.which(binary)
        if path is None:
            raise AssertionError(f"{binary} is not installed: tests/deploy/run.sh installs it from Debian")
        files[binary] = Path(path).resolve()
    files.update({script: HERE / script for script in part.scripts})
    return files


def _key(base_image: str, files: dict[str, Path], part: Part) -> str:
    digest = hashlib.sha256(base_image.encode())
    for name, path in sorted(files.items()):
        digest.update(f"\0{name}\0".encode())
        digest.update(path.read_bytes())
    if part.python313:
        digest.update(str(python313()).encode())
    return digest.hexdigest()[:12]


def part_image(name: str, base_image: str, figures: list[str]) -> str:
    """The image of part ``name``, built unless an image of the same key exists."""
    part = PARTS[name]
    files = _sources(name, part)
    repository = f"localhost/tuplehub-tier-{name}"
    tag = f"{repository}:{_key(base_image, files, part)}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    args = [f"--build-arg=BASE_IMAGE={base_image}"]
    if part.python313:
        prefix = python313()
        args += [f"--build-arg=PYTHON_PREFIX={prefix}", f"--volume={prefix}:/python-src:ro"]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"tuplehub-tier-{name}-") as context:
        for file_name, path in files.items():
            shutil.copy2(path, Path(context) / file_name)
        # Docker format keeps HEALTHCHECK (the OCI image config has no field for it).
        podman("build", "--format", "docker", *args, "-t", tag, context, timeout=900)
    figures.append(f"part image {name}: built in {time.monotonic() - started:.0f} s")
    older = podman("images", "--filter", f"reference={repository}", "--format", "{{.Repository}}:{{.Tag}}").stdout
    for stale in set(older.split()) - {tag}:
        podman("rmi", stale, check=False)
    return tag
