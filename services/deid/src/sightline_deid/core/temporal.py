"""Dates, times and date-times moved by one per-patient offset (Retain Longitudinal, Modified Dates).

A patient's offset is a whole number of seconds, keyed on the patient identity, so every
interval between two of that patient's events is kept exactly, across studies and files. A
Date and its Time (``StudyDate`` and ``StudyTime``, ``Date`` and ``Time`` of a content item...)
move together as one instant; a date-time (DT) moves as one value. The recipe's
``date_shift.times`` chooses what happens to times of day:

- ``shift`` (default): times move with the offset; a date whose time crosses midnight changes
  day. Neither the date nor the time of day can be matched against scheduling records.
- ``remove``: times are emptied and DT values keep only their date; dates move by whole days.
- ``keep``: times of day are unchanged and dates move by whole days (weaker: a time of day
  beside a station name can be matched against the hospital's schedule).

A date without a time moves like that date at midnight (by the whole days of the offset). A
value that does not parse is emptied, never passed through.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, keyword_dict

TIME_MODES = ("shift", "remove", "keep")
_DAY = 86400
_TM = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")
_DT = re.compile(r"^(\d{8})(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?$")


def _date_time_pairs() -> dict[int, int]:
    """DA tag -> TM tag of the same event, from the data dictionary (``XDate`` and ``XTime``)."""
    pairs = {}
    for keyword, tag in keyword_dict.items():
        partner = keyword_dict.get(keyword.replace("Date", "Time"))
        if partner is not None and dictionary_VR(tag) == "DA" and dictionary_VR(partner) == "TM":
            pairs[tag] = partner
    return pairs


#: The time of day that completes each date (46 pairs in the current dictionary).
DATE_TIME_PAIRS: Mapping[int, int] = _date_time_pairs()


@dataclass(frozen=True)
class Shift:
    """One patient's offset and the recipe's time mode."""

    seconds: int
    times: str = "shift"

    @property
    def days(self) -> int:
        return self.seconds // _DAY

    @property
    def time_of_day(self) -> int:
        """Seconds that times of day move by (0 unless times are shifted)."""
        return self.seconds % _DAY if self.times == "shift" else 0


def shift_value(value: str, vr: str, shift: Shift, partner_time: str | None = None) -> str | None:
    """One DA, TM or DT value moved by ``shift`` (None: it does not parse, so it is emptied)."""
    value = value.strip()
    if vr == "TM":
        return _shift_time(value, shift)
    if vr == "DT":
        return _shift_datetime(value, shift)
    carry = 0
    if partner_time is not None and shift.time_of_day:
        parsed = _time(partner_time.strip())
        carry = parsed is not None and parsed[0] + shift.time_of_day >= _DAY
    return _shift_date(value, shift.days + carry)


def _shift_date(value: str, days: int) -> str | None:
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        day = dt.date(int(value[:4]), int(value[4:6]), int(value[6:8])) + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return day.strftime("%Y%m%d") if day.year >= 1000 else None


def _time(value: str) -> tuple[int, str] | None:
    """Seconds since midnight and the fraction text of a TM value (None if it does not parse)."""
    m = _TM.match(value)
    if m is None:
        return None
    hh, mm, ss = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
    if hh > 23 or mm > 59 or ss > 59:
        return None
    return hh * 3600 + mm * 60 + ss, m.group(4) or ""


def _format_time(seconds: int, fraction: str) -> str:
    return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}{fraction}"


def _shift_time(value: str, shift: Shift) -> str | None:
    if shift.times == "remove":
        return None
    parsed = _time(value)
    if parsed is None:
        return None
    if shift.times == "keep":
        return value
    seconds, fraction = parsed
    return _format_time((seconds + shift.time_of_day) % _DAY, fraction)


def _shift_datetime(value: str, shift: Shift) -> str | None:
    m = _DT.match(value)
    if m is None:
        return None
    date, time, zone = m.group(1), m.group(2), m.group(3) or ""
    if not time or shift.times != "shift":
        moved = _shift_date(date, shift.days)
        if moved is None or not time or shift.times == "remove":
            return moved  # a date alone, or the time removed (and its zone with it)
        return moved + time + zone if _time(time) is not None else None
    parsed = _time(time)
    if parsed is None:
        return None
    seconds, fraction = parsed
    total = seconds + shift.time_of_day
    moved = _shift_date(date, shift.days + total // _DAY)
    return None if moved is None else moved + _format_time(total % _DAY, fraction) + zone
