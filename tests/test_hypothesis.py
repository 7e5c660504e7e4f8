"""Property tests: the wire schema's parser (hisguard/report.py) and the agent's config loader
(agent/config.py) answer any input with a value or their own error, never another exception."""

from __future__ import annotations

import json
import math
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hisguard.agent.config import AgentConfig, load_config
from hisguard.agent.topology import activate
from hisguard.plan import BusinessFunction, Scope, Severity, Trigger
from hisguard.report import MAX_BATCH, Heartbeat, IncidentEvent, ReportBatch
from hisguard.tomlconfig import ConfigError

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=25,
)
names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(lambda s: s.strip())
# The range every backend stores (hisguard.report.aware_time refuses the rest).
aware = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30), timezones=st.sampled_from([timezone.utc])
)
small_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)

incidents = st.builds(
    IncidentEvent,
    id=st.uuids(),
    key=names,
    state=st.sampled_from(["open", "resolved"]),
    trigger=st.sampled_from(list(Trigger)),
    severity=st.sampled_from(list(Severity)),
    scope=st.sampled_from(list(Scope)),
    host=names,
    department=st.none() | names,
    departments=st.lists(names, max_size=3),
    functions=st.lists(st.sampled_from(list(BusinessFunction)), max_size=3),
    title_zh=names,
    title_en=names,
    observed_at=aware,
    evidence=st.dictionaries(st.text(max_size=8), small_json, max_size=3),
)
heartbeats = st.builds(
    Heartbeat,
    id=st.uuids(),
    observed_at=aware,
    interval_s=st.floats(min_value=0.001, max_value=86400),
    department=st.none() | names,
    hospital_critical=st.booleans(),
    snapshot=st.dictionaries(st.text(max_size=8), small_json, max_size=3),
)
batches = st.builds(
    ReportBatch,
    agent=names,
    version=st.text(max_size=50),
    items=st.lists(st.one_of(incidents, heartbeats), min_size=1, max_size=5),
)


@FAST
@given(batches)
def test_a_batch_the_agent_can_build_the_server_parses_back_unchanged(batch: ReportBatch) -> None:
    wire = batch.model_dump_json()
    assert ReportBatch.model_validate_json(wire) == batch
    assert ReportBatch.model_validate(json.loads(wire)) == batch


def _mutate(data: Any, path: list[Any], value: Any, delete: bool) -> Any:
    """Replace (or delete) what sits at `path` (indices taken modulo the container's size)."""
    if not path or not isinstance(data, (dict, list)) or not data:
        return value
    if isinstance(data, dict):
        keys = sorted(data)
        key = keys[hash(str(path[0])) % len(keys)] if not isinstance(path[0], str) or path[0] not in data else path[0]
        out = dict(data)
        if delete and len(path) == 1:
            out.pop(key)
        else:
            out[key] = _mutate(data[key], path[1:], value, delete)
        return out
    i = path[0] % len(data) if isinstance(path[0], int) else 0
    out = list(data)
    out[i] = _mutate(data[i], path[1:], value, delete)
    return out


@FAST
@given(
    batches,
    st.lists(st.one_of(st.integers(0, 10), st.sampled_from(["items", "agent", "version"])), max_size=4),
    json_values,
    st.booleans(),
)
def test_any_change_to_a_valid_batch_is_parsed_or_refused_with_a_validation_error(
    batch: ReportBatch, path: list[Any], value: Any, delete: bool
) -> None:
    data = _mutate(json.loads(batch.model_dump_json()), path, value, delete)
    try:
        parsed = ReportBatch.model_validate(data)
    except ValidationError as exc:
        assert exc.errors()  # names the field that is wrong
        return
    assert 1 <= len(parsed.items) <= MAX_BATCH
    for item in parsed.items:
        assert item.observed_at.tzinfo is not None
        assert isinstance(item.id, uuid.UUID)


@FAST
@given(st.one_of(json_values, st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_any_json_or_bytes_is_a_batch_or_a_validation_error(value: Any) -> None:
    raw = value if isinstance(value, str) else json.dumps(value, allow_nan=True)
    with pytest.raises(ValidationError):
        ReportBatch.model_validate_json(raw)  # random input never makes a batch with valid items
    if not isinstance(value, str):
        with pytest.raises(ValidationError):
            ReportBatch.model_validate(value)


# -- the agent's config loader ----------------------------------------------------------------------
def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    return '""'  # TOML has no null


def to_toml(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in data.items() if v is not None)


BASE = {
    "agent": {"name": "his-app-01", "state_dir": "state", "heartbeat_interval": 30, "department": "门诊收费"},
    "server": {"url": "http://127.0.0.1:8470", "token": "hga_x", "timeout": 5, "batch_size": 50},
    "probe": {
        "ping": [{"name": "net", "targets": [{"address": "127.0.0.1"}], "interval": 10, "timeout": 5}],
        "host": [{"interval": 30, "processes": ["sqlservr"]}],
    },
}


def _load(text: str) -> AgentConfig | None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "agent.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            return load_config(path)
        except ConfigError as exc:
            assert str(exc)  # says what is wrong
            return None
        finally:
            activate(None)  # the loader installs the topology for the classifier; leave none behind


def test_the_base_config_of_these_tests_loads() -> None:
    cfg = _load(to_toml(BASE))
    assert cfg is not None and [j.name for j in cfg.jobs] == ["net", "host"]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.lists(
                st.one_of(
                    st.sampled_from(["agent", "server", "probe", "ping", "host", "targets", "topology", "node"]),
                    st.integers(0, 5),
                    st.text(max_size=8),
                ),
                min_size=1,
                max_size=4,
            ),
            json_values,
            st.booleans(),
        ),
        max_size=4,
    )
)
def test_any_change_to_a_valid_config_loads_or_raises_config_error(changes: list[tuple[list[Any], Any, bool]]) -> None:
    data: Any = BASE
    for path, value, delete in changes:
        data = _mutate(data, path, value, delete)
    _load(to_toml(data) if isinstance(data, dict) else toml_value(data))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_any_toml_document_loads_or_raises_config_error(data: dict[str, Any]) -> None:
    _load(to_toml(data))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_loads_or_raises_config_error(text: str) -> None:
    _load(text)
