"""Rules "functional groups" and "Clean Structured Content": enhanced multi-frame objects keep
their shared and per-frame functional groups and dimension organisation, and SR documents keep
their content tree, with every value inside de-identified by the same recipe.
"""

from __future__ import annotations

import datetime as dt
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ComprehensiveSRStorage, EnhancedMRImageStorage
from sightline_deid.core.engine import Deidentifier

from tests.unit.deid.deid_canary import CANARY_UID_ROOT, canary_dataset, survivors, to_bytes
from tests.unit.deid.real_files import installed_files

FRAMES = 3


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _enhanced_mr() -> Dataset:
    ds = canary_dataset("MR", 7)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.NumberOfFrames = FRAMES
    ds.PixelData = bytes(ds.PixelData) * FRAMES
    dim_uid = f"{CANARY_UID_ROOT}.7.50"
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=dim_uid)])
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = Sequence([_item(
        DimensionOrganizationUID=dim_uid, DimensionIndexPointer=0x00209057,
        FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel="CNRYLABEL")])
    ds.SharedFunctionalGroupsSequence = Sequence([_item(
        PixelMeasuresSequence=Sequence([_item(PixelSpacing=[0.5, 0.5], SliceThickness="1.0")]),
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
        MRTimingAndRelatedParametersSequence=Sequence([_item(RepetitionTime="500", FlipAngle="90",
                                                             EchoTrainLength=1)]),
        MRReceiveCoilSequence=Sequence([_item(ReceiveCoilName="HEAD", ReceiveCoilType="VOLUME")]),
    )])
    ds.PerFrameFunctionalGroupsSequence = Sequence([_item(
        FrameContentSequence=Sequence([_item(
            FrameAcquisitionDateTime=f"19770707101{n}00", DimensionIndexValues=[1, n + 1],
            StackID="1", InStackPositionNumber=n + 1, FrameLabel="CNRYFRAME")]),
        PlanePositionSequence=Sequence([_item(ImagePositionPatient=[0, 0, float(n)])]),
        MREchoSequence=Sequence([_item(EffectiveEchoTime=10.0)]),
    ) for n in range(FRAMES)])
    return ds


def _run(engine: Deidentifier, data: bytes) -> tuple[Dataset, bytes]:
    out = engine.deidentify(data, "tenant-a").data
    return pydicom.dcmread(BytesIO(out)), out


def test_functional_groups_and_dimensions_are_kept_and_deidentified(engine: Deidentifier) -> None:
    out, data = _run(engine, to_bytes(_enhanced_mr()))
    assert survivors(data) == []
    shared = out.SharedFunctionalGroupsSequence[0]
    assert shared.PixelMeasuresSequence[0].PixelSpacing == [0.5, 0.5]
    assert shared.PlaneOrientationSequence[0].ImageOrientationPatient == [1, 0, 0, 0, 1, 0]
    assert shared.MRTimingAndRelatedParametersSequence[0].RepetitionTime == 500
    assert len(out.PerFrameFunctionalGroupsSequence) == FRAMES
    offset = (dt.datetime.strptime(out.StudyDate + out.StudyTime, "%Y%m%d%H%M%S")
              - dt.datetime(1977, 7, 7, 10, 15))
    for n, frame in enumerate(out.PerFrameFunctionalGroupsSequence):
        content = frame.FrameContentSequence[0]
        assert content.DimensionIndexValues == [1, n + 1] and content.InStackPositionNumber == n + 1
        acquired = dt.datetime.strptime(content.FrameAcquisitionDateTime, "%Y%m%d%H%M%S")
        assert acquired - dt.datetime(1977, 7, 7, 10, 10 + n) == offset
        assert frame.PlanePositionSequence[0].ImagePositionPatient == [0, 0, n]
    organisation = out.DimensionOrganizationSequence[0].DimensionOrganizationUID
    assert organisation.startswith("2.25.")
    assert out.DimensionIndexSequence[0].DimensionOrganizationUID == organisation
    assert out.DimensionIndexSequence[0].FunctionalGroupPointer == 0x00209111


def test_functional_groups_of_a_real_enhanced_ct_survive(engine: Deidentifier) -> None:
    path = installed_files()["data/eCT_Supplemental.dcm"]
    original = pydicom.dcmread(path)
    out, _ = _run(engine, Path(path).read_bytes())
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
                    "DimensionOrganizationSequence", "DimensionIndexSequence"):
        assert len(out[keyword].value) == len(original[keyword].value), keyword
    frame = out.PerFrameFunctionalGroupsSequence[0]
    assert frame.PlanePositionSequence[0].ImagePositionPatient == \
        original.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient


def _sr() -> Dataset:
    ds = canary_dataset("CT", 8, canaries=False)
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "PhotometricInterpretation", "PixelData"):
        delattr(ds, keyword)
    ds.SOPClassUID = ComprehensiveSRStorage
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_item(CodeValue="18748-4", CodingSchemeDesignator="LN",
                                                 CodeMeaning="Diagnostic imaging report")])
    finding = _item(RelationshipType="CONTAINS", ValueType="TEXT",
                    TextValue="CNRYTEXT seen by Dr W Hand", ConceptNameCodeSequence=Sequence([
                        _item(CodeValue="121071", CodingSchemeDesignator="DCM", CodeMeaning="Finding")]))
    observer = _item(RelationshipType="HAS OBS CONTEXT", ValueType="PNAME", PersonName="CNRY^DOCTOR")
    when = _item(RelationshipType="CONTAINS", ValueType="DATE", Date="19770707")
    ref = _item(RelationshipType="CONTAINS", ValueType="UIDREF", UID=f"{CANARY_UID_ROOT}.8.60")
    measure = _item(RelationshipType="CONTAINS", ValueType="NUM", MeasuredValueSequence=Sequence([
        _item(NumericValue="12.5", MeasurementUnitsCodeSequence=Sequence([
            _item(CodeValue="mm", CodingSchemeDesignator="UCUM", CodeMeaning="mm")]))]))
    section = _item(RelationshipType="CONTAINS", ValueType="CONTAINER", ContinuityOfContent="SEPARATE",
                    ContentSequence=Sequence([finding, measure]))
    ds.ContentSequence = Sequence([observer, when, ref, section])
    return ds


def test_sr_content_tree_is_kept_and_each_item_deidentified(engine: Deidentifier) -> None:
    out, data = _run(engine, to_bytes(_sr()))
    assert survivors(data) == []
    observer, when, ref, section = out.ContentSequence
    assert [i.ValueType for i in out.ContentSequence] == ["PNAME", "DATE", "UIDREF", "CONTAINER"]
    assert str(observer.PersonName) == "ANONYMOUS"
    assert when.Date == out.StudyDate  # the same day as the study, moved by the same offset
    assert ref.UID.startswith("2.25.")
    finding, measure = section.ContentSequence
    assert finding.TextValue == "ANONYMIZED"
    assert finding.ConceptNameCodeSequence[0].CodeValue == "121071"
    assert measure.MeasuredValueSequence[0].NumericValue == 12.5


def test_sr_content_of_a_real_comprehensive_sr_is_kept(engine: Deidentifier) -> None:
    path = installed_files()["test_files/test-SR.dcm"]
    original = pydicom.dcmread(path)
    out, _ = _run(engine, Path(path).read_bytes())

    def shape(ds: Dataset) -> list[object]:
        return [(i.get("ValueType"), shape(i)) for i in ds.get("ContentSequence", [])]

    assert shape(out) == shape(original) and len(out.ContentSequence) > 0
