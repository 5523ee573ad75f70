"""A short run of every fuzz target (tests/fuzz): its seeds, then a few hundred mutations of them, within contract.

The long, coverage-guided runs are ``make fuzz`` (atheris); this keeps each target and its contract exercised on
every ``make test`` without atheris: a seeded pseudo-random mutator (bit flips, cuts, splices, dictionary
tokens), so the inputs are the same on every run.
"""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

FUZZ = Path(__file__).resolve().parent / "fuzz"
MUTATIONS = 200
_ENTRY = re.compile(r'^"(.*)"$')


def _seeds(name: str) -> list[bytes]:
    folder = FUZZ / "corpus" / name
    return [path.read_bytes() for path in sorted(folder.iterdir())] if folder.is_dir() else []


def _tokens(name: str) -> list[bytes]:
    path = FUZZ / "dicts" / f"{name}.dict"
    if not path.exists():
        return []
    found = (_ENTRY.match(line) for line in path.read_text().splitlines())
    return [match.group(1).encode("latin-1").decode("unicode_escape").encode("latin-1") for match in found if match]


def _mutate(rng: random.Random, data: bytes, seeds: list[bytes], tokens: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        position = rng.randint(0, len(out))
        kind = rng.randrange(6)
        if kind == 0 and out:
            out[min(position, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del out[position : position + rng.randint(1, 64)]
        elif kind == 2 and tokens:
            out[position:position] = rng.choice(tokens)
        elif kind == 3:
            out[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 4 and seeds:
            other = rng.choice(seeds)
            start = rng.randint(0, len(other))
            out[position:] = other[start : start + rng.randint(1, 256)] + out[position:]
        else:
            out[position:position] = out[position : position + rng.randint(1, 32)]
    return bytes(out)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_keeps_its_contract_on_seeds_and_mutations(name: str, tmp_path: Path) -> None:
    """Every seed and every mutation of one either passes or is refused with the documented error."""
    target = TARGETS[name]
    target.prepare()
    seeds, tokens = _seeds(name), _tokens(name)
    assert seeds, f"tests/fuzz/corpus/{name} holds no seeds"
    rng = random.Random(f"smoke-{name}")
    inputs = seeds + [_mutate(rng, rng.choice(seeds), seeds, tokens) for _ in range(MUTATIONS)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a library's warning about a malformed input is no contract violation
        for data in inputs:
            try:
                target.run(data)
            except Exception as exc:
                failing = tmp_path / f"{name}.input"
                failing.write_bytes(data)
                reproduce = f"python -m tests.fuzz.main {name} {failing}"
                raise AssertionError(f"{name}: {type(exc).__name__}: {exc!s:.500}\nreproduce: {reproduce}") from exc
