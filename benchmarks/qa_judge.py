"""The project's own QA prompts (data/qa.tsv) and how a reply to one is judged.

qa.tsv: one prompt a line, `question<TAB>pattern`. The pattern is a Python regular
expression searched case-insensitively in the reply; an empty pattern marks an open prompt
("tell me a joke"), judged only as a non-empty, English, non-degenerate reply.

Language is a heuristic, deliberately simple so that a reader can check a verdict by eye:
a reply is English unless more than 10% of its letters are outside ASCII (another script,
or accented words) or it has at least as many common function words of French, Spanish,
German, Italian or Portuguese as of English (the languages a small model drifts into). A
reply with neither kind of word ("Paris.") counts as English. Words shared with English ("a",
"in", "die", "pour", "per", "con") are left out of the other lists.

Degenerate: empty, or looping: a word 4-gram three times or more, or a short span of
characters repeated six times in a row ("hahahaha...", "!!!!!!").
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

QA_PATH = Path(__file__).resolve().parent / "data" / "qa.tsv"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


ENGLISH = _words(
    "the a an and or but of to in on at for with from by is are was were be been it this "
    "that these those you your i we they he she my our their his her its not no can will "
    "would should do does have has had there what which who how if so as about than then "
    "up out into also just some any all more very here one"
)
OTHER = _words(
    # French
    "de le la les des du est et une un dans avec sur pas que qui ce cette sont je vous nous "
    "il elle au aux mais ou très être c'est "
    # Spanish
    "el los las es y una del por para que su como está muy pero lo "
    # German
    "der das und ist nicht ein eine mit dem sie ich es zu auf für von sind auch wie oder "
    # Italian and Portuguese
    "di che è della sono gli non questo anche molto os da em não uma é"
)
assert not ENGLISH & OTHER
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
LOOP = re.compile(r"(\S.{0,11}?)\1{5,}", re.DOTALL)
NON_ASCII_LETTERS_MAX = 0.10


@dataclass(frozen=True)
class QaRow:
    question: str
    pattern: str  # empty: an open prompt

    @property
    def open(self) -> bool:
        return not self.pattern


@dataclass(frozen=True)
class Verdict:
    correct: bool  # the pattern matches (open prompts: a non-empty reply)
    english: bool
    degenerate: bool

    @property
    def good(self) -> bool:
        """What a user wants: right, in English, and not a loop."""
        return self.correct and self.english and not self.degenerate


def load_qa(path: Path = QA_PATH) -> list[QaRow]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        question, sep, pattern = line.partition("\t")
        if not sep or not question.strip():
            raise ValueError(f"{path}:{number}: expected question<TAB>pattern")
        re.compile(pattern)
        rows.append(QaRow(question, pattern))
    return rows


def is_english(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    if letters and sum(not c.isascii() for c in letters) / len(letters) > NON_ASCII_LETTERS_MAX:
        return False
    words = WORD.findall(text.lower())
    english = sum(w in ENGLISH for w in words)
    other = sum(w in OTHER for w in words)
    return other < english or other == english == 0


def is_degenerate(text: str) -> bool:
    words = WORD.findall(text.lower())
    grams = Counter(tuple(words[i : i + 4]) for i in range(len(words) - 3))
    looping = bool(grams) and max(grams.values()) >= 3
    return not text.strip() or looping or LOOP.search(text) is not None


def judge(row: QaRow, reply: str) -> Verdict:
    if row.open:
        correct = bool(reply.strip())
    else:
        correct = re.search(row.pattern, reply, re.IGNORECASE) is not None
    return Verdict(correct, is_english(reply), is_degenerate(reply))
