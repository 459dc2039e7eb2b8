"""Answer extraction on known strings: MetaMathQA's "The answer is: X" and GSM8K's "#### X"."""

from __future__ import annotations

import pytest

from onelora.data.answers import extract_answer, is_correct, normalize_answer


@pytest.mark.parametrize(("text", "expected"), [
    ("We add the two amounts: 99 + 46 = 145. The answer is: 145", "145"),  # MetaMathQA / synthetic
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72"),      # GSM8K reference
    ("The total is 1,000 dollars.\nThe answer is: 1,000", "1000"),          # thousands separator
    ("#### 1,234,567", "1234567"),
    ("The answer is: -17", "-17"),                                           # negative
    ("The answer is: \u221217", "-17"),                                      # unicode minus
    ("The answer is: 3.50", "3.5"),                                          # decimal, trailing zero
    ("The answer is: 5.0", "5"),
    ("The answer is: 42.", "42"),                                            # trailing period
    ("The answer is: $18", "18"),                                            # dollar sign
    ("The answer is: \\frac{1}{2}", "0.5"),                                  # MATH-style fraction
    ("The answer is: \\dfrac{2}{6}", "1/3"),
    ("The answer is: 2/6", "1/3"),
    ("The answer is: \\sqrt{2}", "\\sqrt{2}"),                                # not a number: kept, spaces dropped
    ("The answer is: 1. Wait. The answer is: 7\n\n### Instruction:", "7"),    # the last one, to end of line
    ("the answer is 12", "12"),                                              # case, no colon
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["We add: 2 + 3 = 5.", "", "The answer is: ", "The answer is:\n5"])
def test_no_answer_phrase_means_no_answer(text):
    assert extract_answer(text) is None


def test_equal_numbers_normalise_equal():
    assert normalize_answer("1,000.") == normalize_answer("1000") == "1000"
    assert normalize_answer("0.50") == normalize_answer("\\frac{1}{2}") == normalize_answer("1/2")
    assert normalize_answer("7") != normalize_answer("17")


def test_is_correct_against_full_solutions_and_bare_answers():
    generated = "We multiply: 6 * 25 = 150. The answer is: 150"
    assert is_correct(generated, "... 6 * 25 = 150. The answer is: 150")
    assert is_correct(generated, "Natalia ... \n#### 150")
    assert is_correct(generated, "150")
    assert not is_correct(generated, "The answer is: 151")
    assert not is_correct("We multiply: 6 * 25 = 150.", "The answer is: 150")  # no phrase: wrong
