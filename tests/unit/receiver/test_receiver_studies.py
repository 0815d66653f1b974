"""Study assembly: complete after an idle timeout, bounded in memory, resent instances replaced."""

from __future__ import annotations

import pytest
from sightline_receiver.core.refusals import Refused, Status
from sightline_receiver.core.studies import Limits, StudyAssembler


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def assembler(clock: Clock, **limits: int | float) -> StudyAssembler:
    values = {
        "idle_timeout_s": 10.0,
        "max_instances_per_study": 3,
        "max_study_bytes": 100,
        "max_pending_bytes": 150,
    }
    values.update(limits)
    return StudyAssembler(Limits(**values), clock=clock)  # type: ignore[arg-type]


def test_a_study_is_complete_only_after_the_idle_timeout_since_its_last_instance() -> None:
    clock = Clock()
    a = assembler(clock)
    a.add("t", "study-1", "i1", b"x" * 10)
    clock.now += 8
    a.add("t", "study-1", "i2", b"y" * 10)
    clock.now += 8
    assert a.due() == []  # 8 s since the last instance
    clock.now += 2
    (study,) = a.due()
    assert (study.tenant, study.study_uid, study.instances) == (
        "t",
        "study-1",
        {"i1": b"x" * 10, "i2": b"y" * 10},
    )
    assert a.pending_bytes == 0 and a.pending_studies == 0


def test_the_same_study_uid_of_two_tenants_is_two_studies() -> None:
    clock = Clock()
    a = assembler(clock)
    a.add("t1", "s", "i1", b"a")
    a.add("t2", "s", "i1", b"b")
    clock.now += 11
    assert sorted((s.tenant, s.instances["i1"]) for s in a.due()) == [("t1", b"a"), ("t2", b"b")]


def test_a_resent_instance_replaces_itself() -> None:
    clock = Clock()
    a = assembler(clock)
    a.add("t", "s", "i1", b"a" * 40)
    a.add("t", "s", "i1", b"b" * 30)
    assert a.pending_bytes == 30
    assert a.drain()[0].instances == {"i1": b"b" * 30}


@pytest.mark.parametrize(
    ("adds", "reason"),
    [
        ([("s", "i1", 10), ("s", "i2", 10), ("s", "i3", 10), ("s", "i4", 10)], "too many instances"),
        ([("s", "i1", 60), ("s", "i2", 60)], "size limit"),
        ([("s1", "i1", 90), ("s2", "i1", 90)], "memory limit"),
    ],
)
def test_limits_refuse_with_out_of_resources(adds: list[tuple[str, str, int]], reason: str) -> None:
    a = assembler(Clock())
    *ok, last = adds
    for study, sop, size in ok:
        a.add("t", study, sop, b"x" * size)
    with pytest.raises(Refused) as exc:
        a.add("t", last[0], last[1], b"x" * last[2])
    assert exc.value.status == Status.OUT_OF_RESOURCES and reason in exc.value.reason
    assert a.pending_bytes == sum(size for _, _, size in ok)  # the refused one is not held


def test_spooled_instances_are_held_by_size_only_and_count_towards_the_study_not_memory() -> None:
    clock = Clock()
    a = assembler(clock)
    a.restore("t", "s", {"i1": 60})
    assert a.pending_bytes == 0
    a.add("t", "s", "i2", b"x" * 30)
    with pytest.raises(Refused, match="size limit"):  # 60 spooled + 30 + 20 > 100
        a.add("t", "s", "i3", b"x" * 20)
    assert a.pending_bytes == 30
    clock.now += 11
    (study,) = a.due()
    assert study.instances == {"i1": None, "i2": b"x" * 30} and study.size == 90


def test_a_study_put_back_for_a_retry_is_due_after_its_delay_and_counts_its_attempts() -> None:
    clock = Clock()
    a = assembler(clock)
    a.restore("t", "s", {"i1": 5}, attempts=2, delay_s=60)
    clock.now += 11
    assert a.due() == []  # idle, but the retry delay has not passed
    clock.now += 50
    (study,) = a.due()
    assert study.attempts == 2 and study.instances == {"i1": None}


def test_an_instance_received_again_is_newer_than_its_spooled_copy() -> None:
    clock = Clock()
    a = assembler(clock)
    assert a.add("t", "s", "i1", b"new") is False
    a.restore("t", "s", {"i1": 3, "i2": 4})
    clock.now += 11
    assert a.due()[0].instances == {"i1": b"new", "i2": None}


def test_settling_leaves_out_instances_received_again_since_the_delivery() -> None:
    clock = Clock()
    a = assembler(clock)
    a.add("t", "s", "i1", b"a")
    a.add("t", "s", "i2", b"b")
    clock.now += 11
    (study,) = a.due()
    assert a.add("t", "s", "i2", b"b2") is False  # resent while the study was on its way
    settled: list[tuple[list[str], bool]] = []
    a.settle("t", "s", list(study.instances), lambda done, idle: settled.append((done, idle)))
    assert settled == [(["i1"], False)]
    a.discard("t", "s", "i2")
    a.settle("t", "s", ["i2"], lambda done, idle: settled.append((done, idle)))
    assert settled[-1] == (["i2"], True) and a.pending_studies == 0 and a.pending_bytes == 0
