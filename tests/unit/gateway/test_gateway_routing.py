"""Routing: which models a study goes to, from its DICOM header alone (one test per rule)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from pydicom.uid import SecondaryCaptureImageStorage
from sightline_common.errors import InvalidInput, NoModelAccepts
from sightline_gateway.core import stow
from sightline_gateway.core.manifests import ManifestCache
from sightline_gateway.core.routing import (
    BODY_PART,
    MIN_SIZE,
    MODALITY,
    NOT_ENABLED,
    PHOTOMETRIC,
    SOP_CLASS,
    Header,
    Router,
    read_header,
    refusal_codes,
    route,
)

from tests.unit.gateway.gateway_fixtures import PHI, phi_dicom, settings
from tests.unit.gateway.routing_fixtures import (
    CHEST,
    DERM,
    chest_manifest,
    chest_xray,
    ct_slice,
    derm_manifest,
    repository,
)

BOTH = {DERM: derm_manifest(), CHEST: chest_manifest()}
ALL = [DERM, CHEST]


def header(data: bytes) -> Header:
    return read_header(data)


def test_a_chest_radiograph_goes_to_the_chest_model_only() -> None:
    decided = route([header(chest_xray())], BOTH, ALL)
    assert decided.models == (CHEST,)
    assert decided.refusals == {DERM: MODALITY}


def test_a_computed_radiograph_in_monochrome1_goes_to_the_chest_model() -> None:
    cr = chest_xray(modality="CR", sop_class="1.2.840.10008.5.1.4.1.1.1", photometric="MONOCHROME1")
    assert route([header(cr)], BOTH, ALL).models == (CHEST,)


def test_a_dermoscopy_photograph_goes_to_the_dermoscopy_model_only() -> None:
    decided = route([header(phi_dicom())], BOTH, ALL)
    assert decided.models == (DERM,)
    assert decided.refusals == {CHEST: MODALITY}


def test_a_ct_is_refused_naming_each_models_rule_and_no_value_from_the_study() -> None:
    decided = route([header(ct_slice())], BOTH, ALL)
    assert not decided.accepted
    error = decided.error()
    assert isinstance(error, NoModelAccepts) and error.status == 422 and error.code == "no-model-accepts"
    assert error.detail == f"no enabled model accepts this study: {DERM} (modality), {CHEST} (modality)"
    assert error.extra == {"refused_by": {DERM: MODALITY, CHEST: MODALITY}}
    assert "CT" not in error.detail and PHI not in str(error.problem())


def test_rule_sop_class_refuses_a_modality_in_the_wrong_sop_class() -> None:
    secondary = chest_xray(sop_class=str(SecondaryCaptureImageStorage))
    assert route([header(secondary)], BOTH, ALL).refusals[CHEST] == SOP_CLASS


def test_rule_body_part_refuses_another_body_part_and_a_missing_one() -> None:
    assert route([header(chest_xray(body_part="KNEE"))], BOTH, ALL).refusals[CHEST] == BODY_PART
    assert route([header(chest_xray(body_part=None))], BOTH, ALL).refusals[CHEST] == BODY_PART
    lower = Header(
        str(chest_manifest().preprocessing.accepted_sop_classes[0]), "DX", "chest", "MONOCHROME2", 512, 512
    )
    assert route([lower], BOTH, ALL).models == (CHEST,)  # compared in upper case


def test_rule_photometric_interpretation_refuses_colour_radiographs() -> None:
    rgb = Header(str(chest_manifest().preprocessing.accepted_sop_classes[0]), "DX", "CHEST", "RGB", 512, 512)
    assert route([rgb], BOTH, ALL).refusals[CHEST] == PHOTOMETRIC


@pytest.mark.parametrize(("rows", "columns"), [(223, 512), (512, 223)])
def test_rule_minimum_size_refuses_an_image_smaller_than_the_model_takes(rows: int, columns: int) -> None:
    small = chest_xray(rows=rows, columns=columns)
    assert route([header(small)], BOTH, ALL).refusals[CHEST] == MIN_SIZE
    assert route([header(chest_xray(rows=224, columns=224))], BOTH, ALL).models == (CHEST,)


def test_unset_criteria_accept_any_value_so_older_manifests_keep_their_meaning() -> None:
    spec = derm_manifest().preprocessing
    assert spec.accepted_body_parts is None and spec.accepted_photometric_interpretations is None
    assert (spec.min_rows, spec.min_columns) == (0, 0)
    odd = Header(spec.accepted_sop_classes[0], "XC", "ANYWHERE", "YBR_FULL_422", 1, 1)
    assert route([odd], BOTH, ALL).models == (DERM,)


def test_a_model_disabled_for_the_tenant_refuses_with_its_own_rule() -> None:
    decided = route([header(chest_xray())], BOTH, [DERM])
    assert not decided.accepted and decided.refusals == {DERM: MODALITY, CHEST: NOT_ENABLED}


def test_a_study_goes_only_to_models_that_accept_every_instance() -> None:
    mixed = [header(phi_dicom()), header(chest_xray())]
    assert route(mixed, BOTH, ALL).models == ()


def test_several_accepting_models_are_listed_in_served_order() -> None:
    wide = chest_manifest(
        accepted_modalities=["DX", "XC"],
        accepted_sop_classes=derm_manifest().preprocessing.accepted_sop_classes,
        accepted_body_parts=None,
        accepted_photometric_interpretations=None,
        min_rows=0,
        min_columns=0,
    )
    photo = [header(phi_dicom())]
    assert route(photo, {DERM: derm_manifest(), CHEST: wide}, ALL).models == (DERM, CHEST)
    assert route(photo, {CHEST: wide, DERM: derm_manifest()}, ALL).models == (CHEST, DERM)


def test_an_unreadable_header_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        read_header(b"\0" * 128 + b"DICM" + b"\x02\x00")


def test_router_enablement_per_tenant_with_a_default_entry(tmp_path: Path) -> None:
    cache = ManifestCache(repository(tmp_path))
    router = Router(cache, ALL, {"clinic": [DERM], "*": [CHEST]})
    assert router.enabled_for("clinic") == [DERM]
    assert router.enabled_for("anyone-else") == [CHEST]
    assert Router(cache, ALL).enabled_for("anyone") == ALL
    assert router.route("clinic", [header(chest_xray())]).refusals[CHEST] == NOT_ENABLED


def test_router_skips_a_served_model_without_a_manifest(tmp_path: Path) -> None:
    router = Router(ManifestCache(repository(tmp_path, derm_manifest())), ALL)
    assert list(router.served_manifests()) == [DERM]
    assert not router.route("t", [header(chest_xray())]).accepted


def test_stow_parts_go_to_the_model_that_takes_most_of_them(tmp_path: Path) -> None:
    router = Router(ManifestCache(repository(tmp_path)), ALL)
    parts = stow.inspect([phi_dicom(seed=1), chest_xray(seed=2), phi_dicom(seed=3), ct_slice(seed=4)])
    marked, models = stow.assign(parts, router.served, lambda h: router.route("t", h))
    assert models == (DERM,)
    assert [p.failure for p in marked] == [
        None,
        stow.SOP_CLASS_NOT_SUPPORTED,
        None,
        stow.SOP_CLASS_NOT_SUPPORTED,
    ]


def test_stow_parts_no_model_takes_all_fail_and_route_nowhere(tmp_path: Path) -> None:
    router = Router(ManifestCache(repository(tmp_path)), ALL)
    parts = stow.inspect([ct_slice(seed=1), b"not dicom"])
    marked, models = stow.assign(parts, router.served, lambda h: router.route("t", h))
    assert models == ()
    assert [p.failure for p in marked] == [stow.SOP_CLASS_NOT_SUPPORTED, stow.CANNOT_UNDERSTAND]


def test_stow_refusals_count_the_refused_parts_and_name_each_models_rules(tmp_path: Path) -> None:
    router = Router(ManifestCache(repository(tmp_path)), ALL)
    parts = stow.inspect([phi_dicom(seed=1), chest_xray(seed=2, body_part="KNEE"), ct_slice(seed=3), b"x"])
    marked, _ = stow.assign(parts, router.served, lambda h: router.route("t", h))
    codes = stow.refusals(parts, marked, router.served, lambda h: router.route("t", h))
    # The unreadable part is not a routing refusal; the chosen model (derm) refused both others.
    assert codes == f"refused=2/4;{DERM}={MODALITY};{CHEST}={BODY_PART}+{MODALITY}"
    kept = stow.inspect([phi_dicom(seed=1)])
    marked, _ = stow.assign(kept, router.served, lambda h: router.route("t", h))
    assert stow.refusals(kept, marked, router.served, lambda h: router.route("t", h)) is None


def test_refusal_codes_hold_no_study_value_and_fit_the_audit_column() -> None:
    assert refusal_codes({}) == "no-model-served"
    assert refusal_codes({}, (3, 3)) == "refused=3/3;no-model-served"
    assert route([header(ct_slice())], BOTH, ALL).codes() == f"{DERM}={MODALITY};{CHEST}={MODALITY}"
    long = refusal_codes({f"model-{n:03d}": [NOT_ENABLED] for n in range(20)})
    assert len(long) == 200 and long.endswith("...")


def test_settings_refuse_enabling_a_model_that_is_not_served(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not served"):
        settings(tmp_path, models=[DERM], models_enabled={"clinic": [CHEST]})
    with pytest.raises(ValidationError, match="twice"):
        settings(tmp_path, models=[DERM, DERM])
    assert settings(tmp_path).models == [DERM] and settings(tmp_path).models_enabled == {}


def test_the_repositorys_manifests_route_the_committed_samples(tmp_path: Path) -> None:
    """The shipped manifests and samples agree: the chest X-rays reach cxr-pneumonia, photos derm-cnn."""
    from tests.conftest import skip_or_fail_in_ci
    from tests.unit.gateway.gateway_fixtures import MODEL_REPOSITORY, REPO

    if not (MODEL_REPOSITORY / CHEST / "manifest.json").is_file():
        skip_or_fail_in_ci(f"{CHEST} is not in the model repository")
    router = Router(ManifestCache(MODEL_REPOSITORY), ALL)
    xrays = sorted((REPO / "samples").glob("cxr_*.dcm"))
    assert xrays
    for path in xrays:
        assert router.route("t", [read_header(path.read_bytes())]).models == (CHEST,), path.name
    assert router.route("t", [read_header(phi_dicom())]).models == (DERM,)
    assert not router.route("t", [read_header(ct_slice())]).accepted
