"""The federated deployment shape, run for real on loopback: a SuperLink, a SuperNode per site, `flwr run`.

What the platform does in docs/federated.md ("Deployment shape"), with Flower's own processes:
``flower-superlink`` (one HTTP port for the Fleet, Control and runtime APIs in flwr 1.42), two
``flower-supernode`` processes, each told only its site and its dataset folder by
``--node-config``, and ``flwr run <app bundle> <connection>`` submitting a Flower app whose
components are ``sightline.ml.federated_server:app`` and ``sightline.ml.federated_client:app``.
The SuperLink runs the ServerApp, which federates 2 rounds through the SuperNodes' ClientApps and
exports the model into a repository folder: the manifest (sha256 of every artifact) says
"federated, 2 rounds, sites ...".

As documented: TLS on every connection (a throwaway CA made here; the SuperNodes and the CLI
verify the SuperLink with it) and node authentication (``--enable-supernode-auth``: each site's
EC public key registered with ``flwr supernode register``; a SuperNode with an unregistered key is
refused).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sightline_common.manifest import load_manifest, sha256_file
from sightline_explain.core.nets import build_model

from sightline.ml.federated_client import float_state
from sightline.stack import free_loopback_ports
from tests.conftest import skip_or_fail_in_ci
from tests.unit.ml.conftest import make_tiny_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITES = ["vidir_modern", "rosendahl"]  # the generated dataset's two sites
BIN = Path(sys.executable).parent
RUN_TIMEOUT_S = 150.0


def app_bundle(dest: Path, config: Path) -> Path:
    """A Flower app: a pyproject.toml naming Sightline's ServerApp and ClientApp and the recipe."""
    dest.mkdir(parents=True)
    (dest / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "sightline-federated"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "sightline"

[tool.flwr.app.components]
serverapp = "sightline.ml.federated_server:app"
clientapp = "sightline.ml.federated_client:app"

[tool.flwr.app.config]
config = "{config}"
"""
    )
    return dest


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signer, hashes.SHA256())


def tls_files(dest: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and the SuperLink's certificate for 127.0.0.1: (ca.crt, superlink.pem, .key)."""
    dest.mkdir(parents=True)
    pem = serialization.Encoding.PEM
    ca_key, key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca = _certificate("sightline test CA", ca_key, None, ca_key)
    cert = _certificate("127.0.0.1", key, ca.subject, ca_key)
    (dest / "ca.crt").write_bytes(ca.public_bytes(pem))
    (dest / "superlink.pem").write_bytes(cert.public_bytes(pem))
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (dest / "superlink.key").write_bytes(private)
    return dest / "ca.crt", dest / "superlink.pem", dest / "superlink.key"


def node_key(dest: Path) -> tuple[Path, Path]:
    """A SuperNode's authentication key pair (P-384, OpenSSH format, as Flower reads them)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    dest.with_suffix(".key").write_bytes(private)
    dest.with_suffix(".pub").write_bytes(public)
    return dest.with_suffix(".key"), dest.with_suffix(".pub")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first found first."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, ppid in parents.items() if ppid in frontier]
        found += children
        frontier = children
    return found


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group, then SIGKILL whatever is left, descendants in other sessions too
    (Flower starts its SuperExec and app processes with ``start_new_session``)."""
    below = [d for p in procs for d in descendants(p.pid)]
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    for pid in below:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def flwr(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    out = subprocess.run(
        [str(BIN / "flwr"), *args, "--format", "json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"flwr {' '.join(args)}: {out.stdout}\n{out.stderr}"
    result: dict[str, Any] = json.loads(out.stdout)
    assert result.get("success"), out.stdout
    return result


def wait_for(log: Path, text: str, count: int, procs: list[subprocess.Popen[bytes]], logs_dir: Path) -> None:
    """Until ``text`` is in ``log`` ``count`` times (the processes all still running)."""
    deadline = time.monotonic() + 60
    while log.read_text().count(text) < count:
        assert all(p.poll() is None for p in procs), logs(logs_dir)
        assert time.monotonic() < deadline, f"no {text!r} in {log.name}\n{logs(logs_dir)}"
        time.sleep(0.2)


def logs(folder: Path) -> str:
    return "\n".join(f"--- {f.name}\n{f.read_text()[-4000:]}" for f in sorted(folder.glob("*.log")))


def test_flwr_run_through_a_superlink_and_two_supernodes_exports_the_federated_model(
    tmp_path: Path,
) -> None:
    for tool in ("flower-superlink", "flower-supernode", "flower-superexec", "flwr"):
        if not (BIN / tool).exists() and shutil.which(tool) is None:
            skip_or_fail_in_ci(f"{tool} is not installed (flwr's CLIs)")

    dataset = make_tiny_dataset(tmp_path / "tiny", per_split_label=12)
    config = tmp_path / "federated.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": str(dataset),
                "cache_dir": str(tmp_path / "cache"),
                "run_dir": str(tmp_path / "run"),
                "repository": str(tmp_path / "repo"),
                "input_size": 32,
                "sites": SITES,
                "rounds": 2,
                "batch_size": 8,
                "threads": 1,
                "strategy": "fedprox",
                "proximal_mu": 0.1,
                "architecture": {"name": "LesionNet", "kwargs": {"widths": [8, 16, 16, 16], "dropout": 0.0}},
            }
        )
    )
    app = app_bundle(tmp_path / "app", config)
    link_port, rogue_port, *node_ports = free_loopback_ports(2 + len(SITES))
    ca, cert, cert_key = tls_files(tmp_path / "tls")
    keys = {site: node_key(tmp_path / "tls" / site) for site in SITES}
    rogue_key, _ = node_key(tmp_path / "tls" / "unregistered")
    home = tmp_path / "flwr-home"  # Flower's state, installed apps and CLI connections: not ~/.flwr
    home.mkdir()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "test"\n\n[superlink.test]\n'
        f'address = "127.0.0.1:{link_port}"\nroot-certificates = "{ca}"\n'
    )
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # SuperExec starts flwr-serverapp etc.
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "OMP_NUM_THREADS": "1",
    }
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        with (logs_dir / f"{name}.log").open("wb") as log:
            return subprocess.Popen(
                [str(BIN / args[0]), *args[1:]],
                env=env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    procs: list[subprocess.Popen[bytes]] = []
    t0 = time.monotonic()
    try:
        procs.append(
            start(
                "superlink",
                "flower-superlink",
                "--ssl-ca-certfile",
                str(ca),
                "--ssl-certfile",
                str(cert),
                "--ssl-keyfile",
                str(cert_key),
                "--enable-supernode-auth",
                "--host",
                "127.0.0.1",
                "--port",
                str(link_port),
                "--disable-runtime-dependency-installation",
            )
        )
        link_log = logs_dir / "superlink.log"
        wait_for(link_log, "Application startup complete", 1, procs, logs_dir)
        for site in SITES:  # the federation's members: their public keys, registered by the platform
            flwr(["supernode", "register", str(keys[site][1]), "test"], env, tmp_path)

        def supernode(name: str, site: str, port: int, key: Path, *extra: str) -> subprocess.Popen[bytes]:
            return start(
                name,
                "flower-supernode",
                "--superlink",
                f"127.0.0.1:{link_port}",
                "--root-certificates",
                str(ca),
                "--auth-supernode-private-key",
                str(key),
                "--port",
                str(port),
                "--node-config",
                f"site='{site}' dataset='{dataset}'",
                *extra,
            )

        for site, port in zip(SITES, node_ports, strict=True):
            procs.append(supernode(f"supernode-{site}", site, port, keys[site][0]))
        wait_for(link_log, "Activated node_id=", len(SITES), procs, logs_dir)
        # A SuperNode whose key the federation does not know is refused (and gives up).
        rogue = supernode("unregistered", SITES[0], rogue_port, rogue_key, "--max-retries", "1")
        procs.append(rogue)

        started = flwr(["run", str(app), "test"], env, tmp_path)
        run_id = str(started["run-id"])
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            runs = flwr(["ls", "test", "--run-id", run_id], env, tmp_path)["runs"]
            assert isinstance(runs, list) and len(runs) == 1
            status = str(runs[0]["status"])
            if status.startswith("finished"):
                break
            assert time.monotonic() < deadline, f"run {run_id} still {status}\n{logs(logs_dir)}"
            time.sleep(1)
        assert status == "finished:completed", f"{status}\n{logs(logs_dir)}"
        traffic = runs[0]["network-traffic"]
        assert rogue.wait(timeout=30) != 0, logs(logs_dir)
        assert "No SuperNode found with the given public key" in link_log.read_text()
    finally:
        stop(procs)
    elapsed = time.monotonic() - t0

    # The ServerApp exported the global model, as `sightline federated train` does.
    manifest = load_manifest(tmp_path / "repo", "derm-cnn-federated")
    folder = tmp_path / "repo" / "derm-cnn-federated"
    assert set(manifest.artifacts) >= {"1/model.onnx", "1/model.pt", "config.pbtxt"}
    for relative, digest in manifest.artifacts.items():
        assert sha256_file(folder / relative) == digest
    provenance = manifest.training_data["provenance"]
    assert provenance.startswith("federated, 2 rounds, sites rosendahl, vidir_modern"), provenance
    federated = manifest.training_data["federated"]
    # Each SuperNode answered for its own site only: the counts are per site, from its rows.
    assert federated["sites"] == {
        "rosendahl": {"images": 12, "malignant": 6},
        "vidir_modern": {"images": 12, "malignant": 6},
    }
    assert [h["round"] for h in federated["history"]] == [0, 1, 2]
    # The weights went through the SuperLink: down to and back from each site, every round.
    model = build_model(manifest.architecture)
    model_bytes = sum(t.numel() * t.element_size() for t in float_state(model).values())
    assert isinstance(traffic, dict)
    assert int(traffic["total-bytes"]) >= 2 * len(SITES) * 2 * model_bytes
    print(f"deployment run: {elapsed:.1f} s, {traffic['total-bytes']} bytes through the SuperLink")
