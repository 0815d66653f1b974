"""Clean Descriptors, fail closed: a free-text value is kept whole or replaced whole.

A value is kept only when every word is on the recipe's clinical vocabulary and no word
- is a surname or given name (the shipped name lists, see ``resources/names/SOURCE.md``),
- follows a title (Dr, Mr, Mrs, Prof...), or
- is a single capital letter (an initial: "Dr W Hand").
Otherwise it is replaced by a dummy value. Clinical words that are also surnames (Hand, Head,
Lung, Back...) therefore always replace the value: a name cannot be told from an organ.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

NAMES_PACKAGE = "sightline_deid.resources.names"
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class DescriptorPolicy:
    """What a cleaned descriptor may consist of."""

    vocabulary: frozenset[str]
    names: frozenset[str]
    titles: frozenset[str]


def load_names(lists: Iterable[str]) -> frozenset[str]:
    """The union of the shipped name lists named ``lists`` (file stems), lower case."""
    root = resources.files(NAMES_PACKAGE)
    names: set[str] = set()
    for stem in lists:
        resource = root.joinpath(f"{stem}.txt")
        if not resource.is_file():
            raise FileNotFoundError(stem)
        names.update(line.strip() for line in resource.read_text(encoding="utf-8").splitlines())
    names.discard("")
    return frozenset(names)


def clean(text: str, policy: DescriptorPolicy) -> str | None:
    """``text`` unchanged when it may be kept, else None (the caller replaces the value)."""
    for word in _WORD.findall(text):
        lower = word.lower()
        # A title is never kept, so neither is the word that follows it.
        if (lower not in policy.vocabulary or lower in policy.names or lower in policy.titles
                or (len(word) == 1 and word.isupper())):
            return None
    return text
