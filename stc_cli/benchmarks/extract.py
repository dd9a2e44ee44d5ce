"""The one answer extractor of ``--mode robust``: what a response commits to, or None.

Rules, in order (documented in the README; the tests pin each):

choice (an option letter among the first ``n_options`` of A..E):
  1. The whole response is a letter, optionally wrapped or followed by punctuation: ``B``, ``b``,
     ``(B)``, ``B.``, ``B)``, ``B:``, ``" C"``. Lower case only counts here, where it cannot be an article.
  2. It starts with a capital letter followed by ``.``, ``)`` or ``:``: ``B. Blue``, ``(C) the car``.
  3. It names one after a cue: ``answer is C``, ``Answer: (C)``, ``best option: C``, ``option C``.
  4. It repeats exactly one option's text (case and surrounding punctuation ignored).
  5. Exactly one distinct valid capital letter stands alone as a word anywhere in it.
  A list response is read through its first element.

number: the first integer written in digits, else the first number word from zero to twenty.
yes/no: the first word, case-insensitive, is yes/no (or the response is just ``Y``/``N``).
"""

from __future__ import annotations

import re

LETTERS = "ABCDE"
_CUE = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*:?\s*\(?([A-E])\b\)?", re.IGNORECASE)
_LEADING = re.compile(r"^\(?([A-E])(?:[.):]|\s*$)")
_ALONE = re.compile(r"^\(?([A-Ea-e])\)?[.:)]?$")
_WORD_LETTER = re.compile(r"(?<![A-Za-z'])([A-E])(?![A-Za-z'])")
_INTEGER = re.compile(r"(?<![\d.])-?\d+(?![\d.]*\d)")
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()


def first_text(response) -> str | None:
    """The response as text: a list is read through its first element; None stays None."""
    if isinstance(response, list):
        response = response[0] if response else None
    return None if response is None else str(response)


def extract_choice(
    response, options: list[str] | tuple[str, ...] = (), n_options: int | None = None
) -> str | None:
    """The option letter the response commits to, or None. ``options`` are the option texts (with or
    without their ``A.`` labels); ``n_options`` defaults to ``len(options)`` or 5."""
    text = first_text(response)
    if text is None:
        return None
    text = text.strip()
    valid = LETTERS[: n_options or len(options) or len(LETTERS)]
    for pattern in (_ALONE, _LEADING):
        match = pattern.match(text)
        if match and match.group(1).upper() in valid:
            return match.group(1).upper()
    cue = _CUE.search(text)
    if cue and cue.group(1).upper() in valid:
        return cue.group(1).upper()
    said = _normalise(text)
    texts = [_normalise(_strip_label(option)) for option in options]
    if said and texts.count(said) == 1:
        return LETTERS[texts.index(said)]
    alone = {m.group(1) for m in _WORD_LETTER.finditer(text)} & set(valid)
    return alone.pop() if len(alone) == 1 else None


def extract_number(response) -> int | None:
    """The count a response gives: first integer in digits, else first number word (zero..twenty)."""
    text = first_text(response)
    if text is None:
        return None
    match = _INTEGER.search(text)
    if match:
        return int(match.group())
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _NUMBER_WORDS:
            return _NUMBER_WORDS.index(word)
    return None


def extract_yes_no(response) -> str | None:
    """``"Yes"`` or ``"No"`` when the response starts with it (any case), else None."""
    text = first_text(response)
    if text is None:
        return None
    words = re.findall(r"[A-Za-z]+", text)
    if not words:
        return None
    first = words[0].lower()
    if first in ("yes", "y"):
        return "Yes"
    if first in ("no", "n"):
        return "No"
    return None


def _strip_label(option: str) -> str:
    return re.sub(r"^\(?[A-E][.):]\s*", "", option.strip())


def _normalise(text: str) -> str:
    return re.sub(r"[\s.,;:!?\"'()]+", " ", text.lower()).strip()
