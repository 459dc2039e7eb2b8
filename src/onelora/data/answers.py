"""Final answers of math solutions: found in MetaMathQA's "The answer is: X" or GSM8K's "#### X",
normalised so that equal numbers compare equal ("1,000." == "1000", "3.50" == "3.5",
"\\frac{1}{2}" == "1/2" == "0.5"). Used for exact-match accuracy and the App. C side-by-side.

Extraction is strict: a generation without the answer phrase has no answer (``None``), counted
wrong; no "last number in the text" guessing.
"""

from __future__ import annotations

import re
from fractions import Fraction

# the LAST answer phrase wins; the answer runs to the end of its line
_PHRASE = re.compile(r"The answer is:?|####", re.IGNORECASE)
_FRAC = re.compile(r"^\\[dt]?frac\{\s*([-+]?[\d.,]+)\s*\}\{\s*([-+]?[\d.,]+)\s*\}$")
_NUMBER = re.compile(r"^[-+]?(\d+(,\d{3})*|\d*)(\.\d+)?$")


def _number(text: str) -> Fraction | None:
    """An exact rational from "1,234", "-3.50", "7/2" or "\\frac{7}{2}"; None if not a number."""
    match = _FRAC.match(text)
    if match:
        num, den = (_number(g) for g in match.groups())
        return num / den if num is not None and den else None
    if text.count("/") == 1:
        num, den = (_number(part.strip()) for part in text.split("/"))
        return num / den if num is not None and den else None
    if not text or not _NUMBER.match(text) or not any(c.isdigit() for c in text):
        return None
    return Fraction(text.replace(",", ""))


def _format(value: Fraction) -> str:
    """Integers plainly; terminating decimals as decimals ("0.5"); other rationals as "p/q"."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    digits = 0
    while (value * 10**digits).denominator != 1:
        digits += 1
    return f"{float(value):.{digits}f}" if digits <= 15 else f"{value.numerator}/{value.denominator}"


def normalize_answer(text: str) -> str:
    """A canonical form: numbers exact and unformatted, anything else without spaces and ``$``."""
    text = text.strip().replace("\u2212", "-")  # a unicode minus sign
    text = text.rstrip(".").strip()
    text = re.sub(r"^\\?\$|\\?\$$", "", text).strip()  # $5, 5$, \$5
    text = re.sub(r"\\boxed\{(.*)\}$", r"\1", text).strip()
    value = _number(text.replace(" ", "").lstrip("$"))
    if value is not None:
        return _format(value)
    return re.sub(r"\s+", "", text).replace("$", "")


def extract_answer(text: str) -> str | None:
    """The normalised final answer of a solution, or None when it states none."""
    phrases = list(_PHRASE.finditer(text or ""))
    if not phrases:
        return None
    answer = normalize_answer(text[phrases[-1].end():].split("\n", 1)[0])
    return answer or None


def is_correct(generated: str, reference: str) -> bool:
    """Exact match of the extracted answers (the reference is a full solution or a bare answer)."""
    predicted = extract_answer(generated)
    expected = extract_answer(reference)
    if expected is None:
        expected = normalize_answer(reference) or None
    return predicted is not None and predicted == expected
