"""Values that used to render and then break at apply time (or in a crash loop) are refused by
`helm template`, with a message that names the key to fix (issue 14, findings 1 and 8)."""

from __future__ import annotations

import pytest

from .conftest import CHART, RELEASE, render, run_helm

pytestmark = pytest.mark.charts

#: The production settings without which the gateway cannot start; every case below adds these.
AUTH = ["auth.jwksUrl=https://login.example.org/jwks.json", "auth.issuer=https://login.example.org/"]
DIGEST = "sha256:" + "a" * 64


def _template(sets: list[str], release: str = RELEASE) -> tuple[int, str]:
    args = ["template", release, str(CHART), "--namespace", "sightline"]
    for item in sets:
        args += ["--set", item]
    result = run_helm(*args, check=False)
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        # Finding 1: production settings the gateway needs, refused up front instead of a crash loop.
        ([], "auth.jwksUrl"),
        (AUTH[:1], "auth.issuer"),
        (["auth.jwksUrl=http://login.example.org/jwks.json", AUTH[1]], "auth.jwksUrl"),
        # Finding 8: autoscaling bounds.
        (
            [
                *AUTH,
                "components.gateway.autoscaling.minReplicas=5",
                "components.gateway.autoscaling.maxReplicas=3",
            ],
            "components.gateway.autoscaling",
        ),
        (
            [
                *AUTH,
                "triton.autoscaling.enabled=true",
                "triton.autoscaling.minReplicas=4",
                "triton.autoscaling.maxReplicas=2",
            ],
            "triton.autoscaling",
        ),
        (
            [*AUTH, "kserve.enabled=true", "kserve.minReplicas=5", "kserve.maxReplicas=2"],
            "kserve.minReplicas",
        ),
        ([*AUTH, "rayService.enabled=true", "rayService.workers.minReplicas=5"], "rayService.workers"),
        # Resources: limit below request, and quantities Kubernetes cannot parse.
        (
            [*AUTH, "components.deid.resources.requests.cpu=2", "components.deid.resources.limits.cpu=1"],
            "components.deid.resources",
        ),
        ([*AUTH, "defaults.resources.requests.memory=2Gi"], "defaults.resources"),
        ([*AUTH, "triton.resources.requests.cpu=8"], "triton.resources"),
        (
            [*AUTH, "components.gateway.resources.limits.memory=lots"],
            "components.gateway.resources.limits.memory",
        ),
        ([*AUTH, "defaults.resources.requests.cpu=fast"], "defaults.resources.requests.cpu"),
        ([*AUTH, "defaults.tmpSizeLimit=big"], "defaults.tmpSizeLimit"),
        ([*AUTH, "triton.shmSizeLimit=2 GB"], "triton.shmSizeLimit"),
        # A PDB that blocks every drain.
        ([*AUTH, "defaults.pdb.maxUnavailable=0"], "defaults.pdb.maxUnavailable"),
        ([*AUTH, "triton.pdb.maxUnavailable=0%"], "triton.pdb.maxUnavailable"),
        # A digest in the tag renders repo:@sha256:...; digests have their own key.
        ([*AUTH, f"components.gateway.image.tag=@{DIGEST}"], "components.gateway.image.tag"),
        ([*AUTH, "triton.image.digest=sha256:short"], "triton.image.digest"),
        # A dependency switched off while another component still calls it.
        ([*AUTH, "components.deid.enabled=false"], "components.deid.enabled"),
        ([*AUTH, "triton.enabled=false"], "triton.enabled"),
        # Combinations the templates would silently drop.
        (
            [
                *AUTH,
                "kserve.enabled=true",
                "triton.modelRepository.source=volume",
                "triton.modelRepository.volume.claimName=m",
            ],
            "triton.modelRepository.source",
        ),
        ([*AUTH, "triton.gpu.enabled=false"], "triton.modelConfigName"),
        ([*AUTH, "triton.modelRepository.source=volume"], "triton.modelRepository.volume.claimName"),
        # NetworkPolicy egress with no peers would allow any address on the port (finding 3).
        ([*AUTH, "database.networkPeers=null"], "database.networkPeers"),
        ([*AUTH, "objectStorage.networkPeers={}"], "objectStorage.networkPeers"),
        ([*AUTH, "otel.networkPeers[0].bogus=1"], "otel.networkPeers"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_values_are_refused_naming_the_key(sets: list[str], key: str) -> None:
    code, stderr = _template(sets)
    assert code != 0, f"accepted {sets}"
    assert key in stderr, stderr


def test_long_release_name_is_refused_before_names_collide() -> None:
    """Names are cut at 63 characters: a long release would give several objects one name."""
    code, stderr = _template(AUTH, release="r" * 53)
    assert code != 0 and "fullnameOverride" in stderr, stderr


def test_release_name_too_long_for_kuberay_is_refused_with_rayservice() -> None:
    """KubeRay refuses a RayService name over 47 characters (<fullname>-explain)."""
    assert _template(AUTH, release="r" * 31)[0] == 0
    code, stderr = _template([*AUTH, "rayService.enabled=true"], release="r" * 31)
    assert code != 0 and "rayService.enabled" in stderr and "KubeRay" in stderr, stderr


def test_longest_accepted_release_keeps_every_name_distinct_and_valid() -> None:
    release = "r" * 30
    code, stderr = _template(AUTH, release=release)
    assert code == 0, stderr


def test_image_digest_pins_the_image() -> None:
    docs = render(
        None, *AUTH, f"components.gateway.image.digest={DIGEST}", "components.gateway.image.tag=1.2.3"
    )
    gateway = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{RELEASE}-gateway"
    )
    image = gateway["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"sightline/gateway:1.2.3@{DIGEST}"


def test_good_values_still_render() -> None:
    """The guards refuse only mistakes: fractional CPU, percentages and plain numbers pass."""
    docs = render(
        None,
        *AUTH,
        "defaults.resources.requests.cpu=0.25",
        "defaults.resources.limits.cpu=500m",
        "triton.pdb.maxUnavailable=50%",
        "components.gateway.autoscaling.minReplicas=3",
        "components.gateway.autoscaling.maxReplicas=3",
    )
    assert any(d["kind"] == "Deployment" for d in docs)
