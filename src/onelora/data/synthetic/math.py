"""Synthetic arithmetic word problems in MetaMathQA's json format, for the laptop-sized transfer.

Each record is ``{"query", "response", "type", "original_question"}`` like MetaMathQA's, and every
response ends with "The answer is: X", so the data module, the answer extraction and the App. C
side-by-side treat these files exactly as the real dataset. The problem types are the transfer:
a tiny LLaMA is pre-trained on ``add`` / ``sub`` and fine-tuned on ``mul`` / ``two_step``.

A file is generated once per setting (types, count, seed, generator version), written atomically
and reused: the same arguments always give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Callable, Iterable

from ...cache import build_once
from ...files import write_text_atomic

#: bump when the generator's output changes (it is part of the cache key)
VERSION = 1

NAMES = ("Ava", "Ben", "Carla", "Dev", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jack", "Kira", "Leo",
         "Mia", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tara", "Umar")
ITEMS = ("apples", "pencils", "marbles", "stickers", "books", "cookies", "stamps", "shells", "cards",
         "coins", "eggs", "flowers")

Problem = tuple[str, str, int]  # query, response, answer


def _add(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    query = rng.choice((
        f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?",
        f"A box holds {a} {item} and another box holds {b} {item}. How many {item} are in both boxes?",
        f"{name} collected {a} {item} on Monday and {b} {item} on Tuesday. How many {item} did {name} collect in total?",
    ))
    return query, f"We add the two amounts: {a} + {b} = {a + b}.", a + b


def _sub(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a = rng.randint(20, 199)
    b = rng.randint(1, a - 1)
    query = rng.choice((
        f"{name} has {a} {item} and gives away {b} of them. How many {item} does {name} have left?",
        f"There are {a} {item} in a basket. {name} takes {b} {item} out. How many {item} are still in the basket?",
        f"{name} had {a} {item} and lost {b}. How many {item} does {name} have now?",
    ))
    return query, f"We subtract the amount taken away: {a} - {b} = {a - b}.", a - b


def _mul(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(10, 99)
    query = rng.choice((
        f"{name} buys {a} bags with {b} {item} in each bag. How many {item} does {name} buy?",
        f"There are {a} shelves and each shelf holds {b} {item}. How many {item} are on the shelves?",
        f"{name} collects {b} {item} every day for {a} days. How many {item} does {name} collect?",
    ))
    return query, f"We multiply the number of groups by the size of each group: {a} * {b} = {a * b}.", a * b


def _two_step(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    c = rng.randint(1, a + b - 1)
    query = rng.choice((
        f"{name} has {a} {item}, gets {b} more and then gives away {c}. How many {item} does {name} have?",
        f"A shop has {a} {item}. It receives {b} more and sells {c}. How many {item} are left in the shop?",
    ))
    response = f"First we add: {a} + {b} = {a + b}. Then we subtract: {a + b} - {c} = {a + b - c}."
    return query, response, a + b - c


GENERATORS: dict[str, Callable[[random.Random], Problem]] = {
    "add": _add, "sub": _sub, "mul": _mul, "two_step": _two_step,
}


def problems(types: Iterable[str], count: int, seed: int) -> list[dict[str, str]]:
    """``count`` distinct problems, types drawn uniformly, deterministic from ``seed``."""
    types = list(types)
    unknown = [t for t in types if t not in GENERATORS]
    if unknown or not types:
        raise ValueError(f"problem types {unknown or types}: choose from {sorted(GENERATORS)}")
    rng, seen, records = random.Random(seed), set(), []
    attempts = 0
    while len(records) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise ValueError(f"cannot draw {count} distinct problems of types {types}; ask for fewer")
        kind = rng.choice(types)
        query, response, answer = GENERATORS[kind](rng)
        if query in seen:
            continue
        seen.add(query)
        records.append({"query": query, "response": f"{response} The answer is: {answer}",
                        "type": kind, "original_question": query})
    return records


def arithmetic_problems(cache_dir: str | os.PathLike, types: Iterable[str] = ("add", "sub"),
                        count: int = 4000, seed: int = 0) -> str:
    """The path of a MetaMathQA-format json of ``count`` problems; generated once, then reused."""
    types = list(types)
    key = hashlib.sha256(json.dumps([VERSION, types, int(count), int(seed)]).encode()).hexdigest()[:12]
    path = Path(cache_dir).expanduser() / "synthetic_math" / f"{'-'.join(types)}_{count}_seed{seed}_{key}.json"
    # generated once (a complete file is only read, so a teammate's read-only cache serves)
    return str(build_once(path, lambda path: write_text_atomic(path, json.dumps(problems(types, int(count), int(seed)),
                                                                                indent=0)),
                          complete=Path.is_file, what="the synthetic problem file"))
