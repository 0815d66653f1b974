"""Load and validate a de-identification recipe (a versioned YAML data file).

The recipe, not code, says what happens to every attribute: the rows of DICOM PS3.15 Table
E.1-1 with their option columns, a keep list for identity-free attributes, local overrides,
the safe private list and the burned-in annotation policy. This module turns that file into an
immutable :class:`Recipe` whose :meth:`Recipe.action_for` answers "what do I do with tag T".

One file (about 480 lines) because it is one validator of one document: every section's errors
are :class:`RecipeError` with the recipe's label, and the generalised variant is the same file
parsed again. The burned-in section (rules, OCR and text-detector settings, ~90 lines) is the seam
to split along if it grows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from sightline_deid.core.descriptors import DescriptorPolicy, load_names
from sightline_deid.core.lone_chars import LoneCharacterSettings
from sightline_deid.core.ocr import PASSES
from sightline_deid.core.temporal import TIME_MODES
from sightline_deid.core.text_detect import DetectorSettings

Action = Literal["X", "Z", "D", "K", "C", "U", "U*", "H"]
ACTIONS: frozenset[str] = frozenset({"X", "Z", "D", "K", "C", "U", "U*", "H"})
COMBINED: frozenset[str] = frozenset({"X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"})

#: Option column name in the recipe -> option switch name in ``options``.
OPTION_COLUMNS: Mapping[str, str] = {
    "lmd": "retain_longitudinal_modified_dates",
    "lfd": "retain_longitudinal_full_dates",
    "uid": "retain_uids",
    "inst": "retain_institution_identity",
    "pc": "retain_patient_characteristics",
    "dev": "retain_device_identity",
    "cd": "clean_descriptors",
    "sp": "retain_safe_private",
    "csc": "clean_structured_content",
}

#: CID 7050 (De-identification Method) codes, scheme DCM, for the profile and each option.
CID_7050: Mapping[str, tuple[str, str]] = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_pixel_data": ("113101", "Clean Pixel Data Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_longitudinal_modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_longitudinal_full_dates": (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
}

RESOURCE_PACKAGE = "sightline_deid.resources.recipes"
_ROW = re.compile(r"^(?P<tag>[0-9A-FX]{8}|PRIVATE)\s+(?P<basic>[XZDKCU*/]+)(?P<opts>(\s+\w+=[XZDKCU*]+)*)$")


class RecipeError(ValueError):
    """The recipe file is missing or malformed; the service must not start with it."""


@dataclass(frozen=True)
class Rule:
    """One recipe rule: where it comes from, what it covers and the action it resolves to."""

    name: str
    source: Literal["table", "keep", "override"]
    pattern: str
    basic: str
    options: Mapping[str, str]
    action: str


@dataclass(frozen=True)
class SafePrivate:
    """A private attribute allowed by Retain Safe Private: group, creator and element byte."""

    group: int
    creator: str
    element: int


@dataclass(frozen=True)
class BlankRegion:
    """A rectangle of pixels to overwrite; ``None`` width/height means to the image edge."""

    x: int
    y: int
    width: int | None
    height: int | None


@dataclass(frozen=True)
class BurnedInRule:
    """A burned-in text rule: which objects it matches and what to do (pass, ocr or refuse).

    ``pass`` leaves the pixels unchecked (the recipe's reason says why the object is text-free);
    ``ocr`` blanks ``regions`` (if any) and blacks out every word OCR finds in every frame.
    """

    name: str
    sop_classes: frozenset[str]
    modalities: frozenset[str]
    burned_in_annotation: str | None
    action: Literal["pass", "ocr", "refuse"]
    regions: tuple[BlankRegion, ...] = ()


@dataclass(frozen=True)
class OcrPolicy:
    """How OCR looks for text and which text may stay (``keep``: full-match, case-insensitive)."""

    passes: tuple[str, ...]
    scale: int
    min_confidence: float
    #: Blacked-out boxes grow by this fraction of their height on every side (at least 2 px).
    margin: float
    keep: tuple[re.Pattern[str], ...]
    #: What finds the text: ``dbnet`` (a scene-text detector; Tesseract reads what it finds) or
    #: ``tesseract`` alone (whose boxes at ``min_confidence`` are blacked out).
    detector: Literal["dbnet", "tesseract"] = "tesseract"
    dbnet: DetectorSettings = field(default_factory=DetectorSettings)


@dataclass(frozen=True)
class BurnedInPolicy:
    """The ordered rules that decide what happens to pixel text, the default and the OCR settings."""

    default: Literal["refuse", "pass"]
    rules: tuple[BurnedInRule, ...]
    ocr: OcrPolicy


@dataclass(frozen=True)
class RiskPolicy:
    """Re-identification risk (k-anonymity of the retained quasi-identifiers, see :mod:`.quasi`).

    ``generalise_below_k``: the service may be asked for a generalised output (age in 5-year
    bands, 90 and over one band, the device reduced to its manufacturer and model) for a study
    whose class of exact quasi-identifiers is smaller than the gateway's k. The gateway decides,
    since only it knows the tenant's classes; the recipe decides whether it may.
    """

    generalise_below_k: bool = False


@dataclass(frozen=True)
class Recipe:
    """An immutable, validated recipe."""

    name: str
    version: str
    options: Mapping[str, bool]
    rules: tuple[Rule, ...]
    exact: Mapping[int, Rule]
    masks: tuple[tuple[int, int, Rule], ...]
    private_rule: Rule
    safe_private: frozenset[SafePrivate]
    private_numeric_vrs: frozenset[str]
    descriptors: DescriptorPolicy
    date_shift_days: tuple[int, int]
    #: What happens to times of day under Retain Longitudinal: shift, remove or keep.
    time_mode: str
    burned_in: BurnedInPolicy
    sha256: str = field(default="")
    risk: RiskPolicy = field(default=RiskPolicy())
    #: The same recipe with Retain Device Identity off: what a generalised output is made with
    #: (None unless ``risk.generalise_below_k``).
    generalised: Recipe | None = None

    def action_for(self, tag: int) -> Rule | None:
        """The rule covering a public tag, or None (not covered: the caller removes it)."""
        rule = self.exact.get(tag)
        if rule is not None:
            return rule
        for mask, value, masked_rule in self.masks:
            if tag & mask == value:
                return masked_rule
        return None

    def method_codes(self, *, pixels_cleaned: bool) -> list[tuple[str, str]]:
        """CID 7050 codes for the profile and each option this recipe applies."""
        codes = [CID_7050["basic"]]
        if pixels_cleaned:
            codes.append(CID_7050["clean_pixel_data"])
        codes.extend(CID_7050[name] for name, on in self.options.items() if on)
        return codes

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def _resolve(basic: str, opts: Mapping[str, str], options: Mapping[str, bool],
             combined: Mapping[str, str], where: str) -> str:
    """The single action a row resolves to: an enabled option wins, else the basic action."""
    chosen = [act for col, act in opts.items() if options.get(OPTION_COLUMNS[col], False)]
    if chosen:
        # Two enabled options on one row (e.g. patient characteristics C and clean descriptors C)
        # agree in the standard; if they ever disagree, keep the more protective one.
        order = ["X", "Z", "D", "U", "U*", "H", "C", "K"]
        return min(chosen, key=order.index)
    if basic in COMBINED:
        if basic not in combined:
            raise RecipeError(f"{where}: combined action {basic} has no entry in 'combined'")
        return combined[basic]
    if basic not in ACTIONS:
        raise RecipeError(f"{where}: unknown action {basic}")
    return basic


def _parse_table(rows: list[Any], options: Mapping[str, bool],
                 combined: Mapping[str, str]) -> list[Rule]:
    rules = []
    for index, row in enumerate(rows):
        where = f"table row {index + 1}"
        if not isinstance(row, str) or not (m := _ROW.match(row.strip())):
            raise RecipeError(f"{where}: expected 'TAG ACTION [option=action ...]'")
        opts: dict[str, str] = {}
        for token in m.group("opts").split():
            col, act = token.split("=")
            if col not in OPTION_COLUMNS:
                raise RecipeError(f"{where}: unknown option column {col}")
            if act not in ACTIONS:
                raise RecipeError(f"{where}: unknown action {act}")
            opts[col] = act
        pattern, basic = m.group("tag"), m.group("basic")
        action = _resolve(basic, opts, options, combined, where)
        name = pattern
        if "X" not in pattern and pattern != "PRIVATE":
            name = keyword_for_tag(int(pattern, 16)) or pattern
        rules.append(Rule(name, "table", pattern, basic, opts, action))
    return rules


def _tag_of(keyword: str, where: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise RecipeError(f"{where}: unknown DICOM keyword {keyword}")
    return int(tag)


def _region(raw: Mapping[str, Any]) -> BlankRegion:
    def dim(value: Any) -> int | None:
        return None if value == "full" else int(value)

    return BlankRegion(int(raw["x"]), int(raw["y"]), dim(raw["width"]), dim(raw["height"]))


def _ocr(raw: Mapping[str, Any]) -> OcrPolicy:
    passes = tuple(str(p) for p in raw.get("passes", PASSES))
    if not passes or set(passes) - set(PASSES):
        raise RecipeError(f"burned_in.ocr.passes must be a non-empty subset of {list(PASSES)}")
    try:
        keep = tuple(re.compile(str(p), re.IGNORECASE) for p in raw.get("keep") or [])
    except re.error as exc:
        raise RecipeError(f"burned_in.ocr.keep: invalid pattern ({exc})") from None
    scale, margin = int(raw.get("scale", 2)), float(raw.get("margin", 0.25))
    if scale < 1 or margin < 0:
        raise RecipeError("burned_in.ocr: scale must be >= 1 and margin >= 0")
    detector = str(raw.get("detector", "tesseract"))
    if detector not in ("dbnet", "tesseract"):
        raise RecipeError("burned_in.ocr.detector must be 'dbnet' or 'tesseract'")
    found = dict(raw.get("dbnet") or {})
    if set(found) - {"threshold", "box_threshold", "unclip", "blob_fraction", "min_side", "characters"}:
        raise RecipeError(f"burned_in.ocr.dbnet: unknown settings {sorted(found)}")
    try:
        defaults = DetectorSettings()
        characters = LoneCharacterSettings.from_recipe(found.get("characters"))
        dbnet = DetectorSettings(
            threshold=float(found.get("threshold", defaults.threshold)),
            box_threshold=float(found.get("box_threshold", defaults.box_threshold)),
            unclip=float(found.get("unclip", defaults.unclip)),
            blob_fraction=float(found.get("blob_fraction", defaults.blob_fraction)),
            min_side=int(found.get("min_side", defaults.min_side)),
            characters=characters,
        )
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"burned_in.ocr.dbnet: {exc}") from None
    return OcrPolicy(
        passes,
        scale,
        float(raw.get("min_confidence", 0.0)),
        margin,
        keep,
        "dbnet" if detector == "dbnet" else "tesseract",
        dbnet,
    )


def _burned_in(raw: Mapping[str, Any]) -> BurnedInPolicy:
    rules = []
    for item in raw.get("rules", []):
        action = item["action"]
        if action not in ("pass", "ocr", "refuse"):
            # 'blank' (fixed regions only) was removed: a band says nothing about the rest of the
            # frame, so it could not honestly set BurnedInAnnotation; use 'ocr' with regions.
            raise RecipeError(f"burned_in rule {item.get('name')}: unknown action {action}")
        if action == "pass" and not item.get("reason"):
            raise RecipeError(f"burned_in rule {item.get('name')}: 'pass' needs a reason")
        regions = tuple(_region(r) for r in item.get("regions", []))
        bia = item.get("burned_in_annotation")
        rules.append(BurnedInRule(
            name=str(item["name"]),
            sop_classes=frozenset(map(str, item.get("sop_classes", []))),
            modalities=frozenset(map(str, item.get("modalities", []))),
            burned_in_annotation=None if bia is None else str(bia),
            action=action,
            regions=regions,
        ))
    default = raw.get("default", "refuse")
    if default not in ("refuse", "pass"):
        raise RecipeError("burned_in.default must be 'refuse' or 'pass'")
    return BurnedInPolicy(default=default, rules=tuple(rules), ocr=_ocr(raw.get("ocr") or {}))


def _descriptors(raw: Mapping[str, Any], options: Mapping[str, bool]) -> DescriptorPolicy:
    lists = [str(name) for name in raw.get("name_lists") or []]
    if options.get("clean_descriptors") and not lists:
        raise RecipeError("clean_descriptors needs name_lists (a descriptor is checked for names)")
    try:
        names = load_names(lists)
    except FileNotFoundError as exc:
        raise RecipeError(f"clean_descriptors: unknown name list {exc}") from None
    return DescriptorPolicy(
        vocabulary=frozenset(str(w).lower() for w in raw.get("vocabulary") or []),
        names=names,
        titles=frozenset(str(w).lower() for w in raw.get("titles") or []),
    )


def parse_recipe(text: str) -> Recipe:
    """Validate recipe YAML text and build a :class:`Recipe` (raises :class:`RecipeError`)."""
    import hashlib

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe is not valid YAML ({type(exc).__name__})") from exc
    if not isinstance(raw, dict):
        raise RecipeError("recipe must be a mapping")
    sha256 = hashlib.sha256(text.encode()).hexdigest()
    risk = raw.get("reidentification_risk") or {}
    if not isinstance(risk, dict):
        raise RecipeError("reidentification_risk must be a mapping")
    unknown = set(risk) - {"generalise_below_k"}
    if unknown:
        raise RecipeError(f"reidentification_risk: unknown keys {sorted(unknown)}")
    policy = RiskPolicy(generalise_below_k=bool(risk.get("generalise_below_k", False)))
    recipe = replace(_build(raw, sha256), risk=policy)
    if not policy.generalise_below_k:
        return recipe
    without_device = {**raw, "options": {**(raw.get("options") or {}), "retain_device_identity": False}}
    return replace(recipe, generalised=replace(_build(without_device, sha256), risk=policy))


def _build(raw: dict[str, Any], sha256: str) -> Recipe:
    """The recipe of parsed YAML ``raw`` (its risk policy and generalised variant set by the caller)."""
    for key in ("name", "version", "options", "combined", "table", "keep", "burned_in"):
        if key not in raw:
            raise RecipeError(f"recipe lacks '{key}'")
    options = {str(k): bool(v) for k, v in raw["options"].items()}
    unknown = set(options) - set(OPTION_COLUMNS.values())
    if unknown:
        raise RecipeError(f"unknown options {sorted(unknown)}")
    if options.get("retain_longitudinal_full_dates") and options.get("retain_longitudinal_modified_dates"):
        raise RecipeError("retain_longitudinal_full_dates and retain_longitudinal_modified_dates "
                          "exclude each other")
    combined = {str(k): str(v) for k, v in raw["combined"].items()}
    rules = _parse_table(raw["table"], options, combined)

    exact: dict[int, Rule] = {}
    masks: list[tuple[int, int, Rule]] = []
    private_rule: Rule | None = None
    for rule in rules:
        if rule.pattern == "PRIVATE":
            private_rule = rule
        elif "X" in rule.pattern:
            mask = int("".join("0" if c == "X" else "F" for c in rule.pattern), 16)
            value = int(rule.pattern.replace("X", "0"), 16)
            masks.append((mask, value, rule))
        else:
            tag = int(rule.pattern, 16)
            if tag in exact:
                raise RecipeError(f"duplicate table row for {rule.pattern}")
            exact[tag] = rule
    if private_rule is None:
        raise RecipeError("table lacks the PRIVATE row")

    all_rules = list(rules)
    for keyword, action in raw["keep"].items():
        where = f"keep {keyword}"
        tag = _tag_of(str(keyword), where)
        if tag in exact:
            raise RecipeError(f"{where}: already a Table E.1-1 row; use 'overrides'")
        if action not in ACTIONS:
            raise RecipeError(f"{where}: unknown action {action}")
        rule = Rule(str(keyword), "keep", f"{tag:08X}", action, {}, action)
        exact[tag] = rule
        all_rules.append(rule)
    for keyword, spec in (raw.get("overrides") or {}).items():
        where = f"override {keyword}"
        tag = _tag_of(str(keyword), where)
        if not spec.get("reason"):
            raise RecipeError(f"{where}: every override needs a reason")
        action = spec["action"]
        if action not in ACTIONS:
            raise RecipeError(f"{where}: unknown action {action}")
        base = exact.get(tag)
        rule = Rule(str(keyword), "override", f"{tag:08X}", base.basic if base else action, {}, action)
        exact[tag] = rule
        all_rules = [r for r in all_rules if r is not base]
        all_rules.append(rule)

    private = raw.get("private") or {}
    safe = frozenset(
        SafePrivate(int(item["group"], 16), str(item["creator"]), int(item["element"], 16))
        for item in private.get("safe", [])
    )
    for item in safe:
        if item.group % 2 == 0:
            raise RecipeError("safe private entries must have an odd group")
    shift = raw.get("date_shift") or {}
    lo, hi = int(shift.get("min_days", -3650)), int(shift.get("max_days", -365))
    if lo > hi:
        raise RecipeError("date_shift.min_days must not exceed max_days")
    time_mode = str(shift.get("times", "shift"))
    if time_mode not in TIME_MODES:
        raise RecipeError(f"date_shift.times must be one of {', '.join(TIME_MODES)}")
    descriptors = _descriptors(raw.get("clean_descriptors") or {}, options)
    return Recipe(
        name=str(raw["name"]),
        version=str(raw["version"]),
        options=options,
        rules=tuple(all_rules),
        exact=exact,
        masks=tuple(masks),
        private_rule=private_rule,
        safe_private=safe,
        private_numeric_vrs=frozenset(private.get("numeric_vrs", [])),
        descriptors=descriptors,
        date_shift_days=(lo, hi),
        time_mode=time_mode,
        burned_in=_burned_in(raw["burned_in"]),
        sha256=sha256,
    )


def available_recipes() -> list[str]:
    """Names of the recipes shipped with the service."""
    root = resources.files(RESOURCE_PACKAGE)
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str) -> Recipe:
    """Load a shipped recipe by name (``sightline-basic``) or any recipe file by path."""
    if not name_or_path:
        raise RecipeError("no recipe given; set one explicitly")
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise RecipeError("recipe file not found")
        return parse_recipe(path.read_text(encoding="utf-8"))
    resource = resources.files(RESOURCE_PACKAGE).joinpath(f"{name_or_path}.yaml")
    if not resource.is_file():
        raise RecipeError(f"unknown recipe; shipped recipes: {', '.join(available_recipes())}")
    return parse_recipe(resource.read_text(encoding="utf-8"))
