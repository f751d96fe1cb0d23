"""Refactors move no byte: each recipe of `golden_flatbuffers` gives the flatbuffer recorded in
tests/golden_flatbuffers.json, byte for byte (sha256).

CHANGED lists recipes whose bytes a change moved on purpose, with the reason; none so far.
"""
import pytest

import golden_flatbuffers as G

CHANGED: dict[str, str] = {}


@pytest.fixture(scope="module")
def golden():
    return G.load_golden()


def test_every_recipe_is_recorded(golden):
    assert set(golden) == set(G.RECIPES), "record new recipes: python -m tests.golden_flatbuffers --record"


@pytest.mark.parametrize("name", list(G.RECIPES))
def test_flatbuffer_bytes_unchanged(name, golden):
    data = G.build(name)
    assert data[4:8] == b"TFL3", f"{name}: not a TFLite flatbuffer"
    assert G.sha256(data) == golden[name], (
        f"{name}: the flatbuffer moved. If the change means to move it, record it "
        f"(python -m tests.golden_flatbuffers --record --only {name}) and say why in CHANGED.")
