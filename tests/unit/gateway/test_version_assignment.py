"""Which version a study gets: the canary share holds over 1,000 studies, a study keeps its
assignment, tenants fall back to ``*``, and shadow never changes the result's version."""

from __future__ import annotations

import math
import uuid

import pytest
from sightline_gateway.core.versions import VersionPlanner, VersionPolicy, canary_point, versions_for

KEY = "test-canary-key"


@pytest.mark.parametrize("share", [0.05, 0.1, 0.25, 0.5])
def test_the_canary_share_holds_over_1000_studies(share: float) -> None:
    policy = VersionPolicy(candidate=2, canary_share=share)
    n = 1000
    canaries = sum(
        versions_for(policy, 1, key=KEY, model="derm-cnn", study_id=str(uuid.uuid4())).canary
        for _ in range(n)
    )
    # Four binomial standard deviations: a correct hash fails this about once in 15,000 runs.
    tolerance = 4 * math.sqrt(n * share * (1 - share))
    assert abs(canaries - n * share) <= tolerance, (canaries, share)


def test_a_study_keeps_its_assignment_and_the_key_reshuffles() -> None:
    ids = [f"study-{n}" for n in range(200)]
    first = [canary_point(KEY, "derm-cnn", i) for i in ids]
    assert first == [canary_point(KEY, "derm-cnn", i) for i in ids]
    assert first != [canary_point("another-key", "derm-cnn", i) for i in ids]
    assert all(0.0 <= p < 1.0 for p in first)


def test_a_canary_gets_the_candidates_result_and_no_shadow() -> None:
    policy = VersionPolicy(candidate=2, shadow=True, canary_share=1.0)
    v = versions_for(policy, 1, key=KEY, model="derm-cnn", study_id="s")
    assert (v.serving, v.result_version, v.canary, v.shadow_version) == (1, 2, True, None)


def test_shadow_scores_with_the_candidate_while_the_result_stays_on_the_serving_version() -> None:
    v = versions_for(VersionPolicy(candidate=2, shadow=True), 1, key=KEY, model="derm-cnn", study_id="s")
    assert (v.result_version, v.canary, v.shadow_version) == (1, False, 2)


def test_without_a_policy_the_promoted_version_serves_alone() -> None:
    v = versions_for(None, 3, key=KEY, model="derm-cnn", study_id="s")
    assert (v.serving, v.result_version, v.shadow_version) == (3, 3, None)


def test_a_tenant_pin_overrides_the_promoted_version() -> None:
    v = versions_for(VersionPolicy(serving=1), 2, key=KEY, model="derm-cnn", study_id="s")
    assert v.result_version == 1


def test_tenants_without_their_own_entry_for_a_model_take_the_default() -> None:
    planner = VersionPlanner(
        {
            "*": {"derm-cnn": VersionPolicy(candidate=2, shadow=True)},
            "hospital-b": {"derm-cnn": VersionPolicy(serving=1)},
            "hospital-c": {"cxr-pneumonia": VersionPolicy(candidate=3, canary_share=1.0)},
        },
        KEY,
    )
    assert planner.plan("hospital-a", "derm-cnn", "s", 1).shadow_version == 2
    assert planner.plan("hospital-b", "derm-cnn", "s", 1).shadow_version is None
    assert planner.plan("hospital-c", "derm-cnn", "s", 1).shadow_version == 2
    assert planner.plan("hospital-c", "cxr-pneumonia", "s", 1).result_version == 3
