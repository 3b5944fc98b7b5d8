"""Tests for tests.configs: built configs survive dumps -> tomllib.loads unchanged; what TOML cannot hold is refused."""

from __future__ import annotations

import datetime
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import configs
from tests.configs import build_config, dumps


def round_trip(config: dict) -> dict:
    return tomllib.loads(dumps(config))


def test_harness_defaults_round_trip():
    config = build_config()
    assert round_trip(config) == config
    assert config["projects"] == [
        {
            "path": "e2e/*",
            "images": [
                {"repository": "app", "tag": "{short_sha}", "push_job": "docker-push"},
                {"repository": "api", "tag": "api-{short_sha}", "push_job": "docker-push-api"},
            ],
        }
    ]
    assert config["redis"]["key_prefix"].startswith("esgtest-")
    assert build_config()["redis"]["key_prefix"] != config["redis"]["key_prefix"]


def test_keywords_override_add_and_drop_sections_and_keys():
    config = build_config(
        gitlab={"url": "https://g.example", "verify_tls": False},
        scan={"backoff_max_s": None},
        webhook={"max_body_bytes": 1024},
        ecr=None,
        projects=[{"id": 7, "images": []}],
    )
    assert config["gitlab"] == {"url": "https://g.example", "timeout_s": 5, "verify_tls": False}
    assert config["scan"] == {
        "poll_interval_s": 1,
        "timeout_s": 12,
        "not_found_grace_s": 2,
        "enhanced_settle_s": 1,
        "first_read_after_s": 0,
    }
    assert config["webhook"] == {"max_body_bytes": 1024}
    assert "ecr" not in config
    assert config["projects"] == [{"id": 7, "images": []}]
    assert round_trip(config) == config


def test_without_defaults_only_the_keywords_are_there():
    config = build_config(defaults=False, gitlab={"url": "https://g.example"})
    assert config == {"gitlab": {"url": "https://g.example"}}
    assert dumps(config) == '[gitlab]\nurl = "https://g.example"\n'


def test_harness_write_config_is_the_builders_defaults(tmp_path: Path):
    from tests import harness

    path = harness.write_config(tmp_path / "config.toml", "http://127.0.0.1:1234", "redis://r:6379/2", prefix="p")
    expected = build_config(
        gitlab={"url": "http://127.0.0.1:1234"}, redis={"url": "redis://r:6379/2", "key_prefix": "p"}
    )
    assert tomllib.loads(path.read_text(encoding="utf-8")) == expected


STRINGS = [
    'say "hi"',
    "C:\\path\\to\\",
    "\\",
    '"',
    '\\"',
    "'''",
    '"""',
    "trailing \\\\",
    "{short_sha}",
    "é ü ß",
    "中文",
    "🚀 emoji",
    "tab\there",
    "new\nline",
    "cr\rlf\n",
    "\b\f",
    "\x00nul",
    "\x1f\x7f",
    "\u2028\u0085",
    "",
    "true",
    "1",
    "[x]",
    "# not a comment",
    "a = b",
]


@pytest.mark.parametrize("text", STRINGS)
def test_strings_are_escaped_for_basic_strings(text: str):
    config = {"s": text, "t": {"s": text, "l": [text, text]}, "a": [{"s": text}]}
    assert round_trip(config) == config


@pytest.mark.parametrize("key", ["bare-key_1", "a b", "x.y", "é", "", 'q"uote', "back\\slash", "[t]", "1"])
def test_keys_that_are_not_bare_are_quoted(key: str):
    config = {key: 1, "t": {key: {key: "v"}}, "a": [{key: [1]}]}
    assert round_trip(config) == config


def test_nested_arrays_of_tables():
    config = build_config(
        defaults=False,
        gitlab={"url": "https://g.example"},
        projects=[
            {
                "path": "a/*",
                "images": [
                    {
                        "repository": "app",
                        "tag": "{sha}",
                        "fail_on": ["CRITICAL"],
                        "meta": {"owner": "x", "n": 2},
                        "layers": [{"digest": "sha256:1"}, {"digest": "sha256:2", "sizes": [1, 2]}],
                    },
                    {"repository": "api", "layers": []},
                ],
            },
            {
                "id": 42,
                "images": [{"repository": "by-id", "push_job": "j"}],
                "extra": {"deep": {"deeper": {"k": True}}},
            },
            {},
        ],
    )
    text = dumps(config)
    assert "[[projects]]" in text and "  [[projects.images]]" in text and "[[projects.images.layers]]" in text
    assert round_trip(config) == config


def test_scalars_keep_their_types():
    config = {
        "int": 5,
        "neg": -3,
        "big": 2**63 - 1,
        "small": -(2**63),
        "float": 0.5,
        "whole_float": 5.0,
        "tiny": 1e-7,
        "huge": 1e16,
        "negzero": -0.0,
        "inf": math.inf,
        "ninf": -math.inf,
        "yes": True,
        "no": False,
        "empty": [],
        "nested": [[1, 2], ["a"], []],
        "mixed": [1, "a", 2.5, True],
    }
    loaded = round_trip(config)
    assert loaded == config
    assert {k: type(v) for k, v in loaded.items()} == {k: type(v) for k, v in config.items()}
    assert math.copysign(1, loaded["negzero"]) == -1
    assert math.isnan(round_trip({"nan": math.nan})["nan"])


def test_tuples_are_arrays():
    assert round_trip({"t": ("a", 1), "tables": ({"x": 1},)}) == {"t": ["a", 1], "tables": [{"x": 1}]}


@pytest.mark.parametrize(
    "value",
    [
        None,
        datetime.datetime(2024, 1, 1, 12, 0),
        b"bytes",
        {1, 2},
        object(),
        1j,
        [None],
        [1, {"table": 1}],
        [{"table": 1}, 1],
        [[{"table": 1}]],
    ],
)
def test_unsupported_values_raise_type_error(value: object):
    with pytest.raises(TypeError):
        dumps({"key": value})
    with pytest.raises(TypeError):
        dumps({"t": {"a": [{"key": value}]}})


def test_dates_are_toml_local_dates():
    assert round_trip({"expires": datetime.date(2027, 1, 31)}) == {"expires": datetime.date(2027, 1, 31)}


def test_non_string_keys_raise_type_error():
    with pytest.raises(TypeError):
        dumps({1: "x"})


def test_values_toml_cannot_hold_raise_value_error():
    with pytest.raises(ValueError, match="64-bit"):
        dumps({"n": 2**63})
    with pytest.raises(ValueError, match="surrogate"):
        dumps({"s": "\ud800"})


def test_write_config_writes_utf8_toml(tmp_path: Path):
    path = configs.write_config(
        tmp_path / "c.toml",
        defaults=False,
        gitlab={"url": "https://g.example/ü"},
        projects=[{"path": "grüppe/*", "images": [{"repository": "app"}]}],
    )
    with path.open("rb") as f:
        assert tomllib.load(f) == {
            "gitlab": {"url": "https://g.example/ü"},
            "projects": [{"path": "grüppe/*", "images": [{"repository": "app"}]}],
        }


scalars = st.text() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.booleans()
arrays = st.recursive(st.lists(scalars, max_size=4), lambda inner: st.lists(inner | scalars, max_size=3), max_leaves=8)
tables = st.recursive(
    st.dictionaries(st.text(max_size=8), scalars | arrays, max_size=4),
    lambda inner: st.dictionaries(
        st.text(max_size=8), scalars | arrays | inner | st.lists(inner, min_size=1, max_size=3), max_size=4
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(tables)
def test_any_supported_dict_round_trips(config: dict):
    assert round_trip(config) == config
