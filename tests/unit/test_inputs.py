"""Strict YAML for every user file, and short excerpts of values in errors."""
import time

import pytest
import yaml

from flexnet_lab.inputs import load_yaml_text, show

BOMB = "\n".join([f'x0: &a0 [{",".join(["lol"] * 10)}]'] +
                 [f"x{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
                 + ["name: *a8"])


def test_alias_bomb_is_refused_fast():
    t = time.perf_counter()
    with pytest.raises(yaml.YAMLError, match="aliases expand"):
        load_yaml_text(BOMB)
    assert time.perf_counter() - t < 0.5


@pytest.mark.parametrize("text,what", [("a: &a [*a]", "recursive"),
                                       ("a: " + "[" * 5000 + "]" * 5000, "nested"),
                                       ("a: 1\na: 2", "duplicate key")])
def test_dangerous_or_ambiguous_yaml_is_refused(text, what):
    with pytest.raises(yaml.YAMLError, match=what):
        load_yaml_text(text)


def test_small_aliases_still_work():
    assert load_yaml_text("a: &x [1, 2]\nb: *x") == {"a": [1, 2], "b": [1, 2]}


def test_show_is_short_for_any_value():
    nested = [1] * 10
    for _ in range(40):
        nested = [nested] * 10          # 10^40 elements if printed in full
    for value in (nested, "x" * 10**6, 10**1000, {"k": "v" * 1000}):
        assert len(show(value)) <= 60
