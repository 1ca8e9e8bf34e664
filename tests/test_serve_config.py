"""The gateway configuration: YAML in, validated models out, clear errors at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from racer.serve.config import ConfigError, load_config, parse_config

MINIMAL = {
    "backends": [
        {"name": "m1", "base_url": "http://127.0.0.1:9/v1/"},
        {"name": "m2", "base_url": "https://x.test/v1"},
    ],
    "routes": [{"name": "racer", "artifact": "artifacts/a"}],
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_yaml_file_gives_a_validated_config_with_defaults_and_resolved_paths(tmp_path):
    path = write(
        tmp_path,
        """
backend_defaults: {timeout_s: 7, retries: 4}
backends:
  - {name: m1, base_url: "http://127.0.0.1:9/v1/", input_cost_per_token: 1.0e-6}
  - {name: m2, base_url: "https://x.test/v1", retries: 0, model: upstream-m2}
routes:
  - {name: racer, artifact: artifacts/a, fallbacks: [m2]}
decision_log: {url: "sqlite:///logs/d.sqlite3"}
""",
    )
    config = load_config(path)
    m1, m2 = config.backends
    assert m1.timeout_s == 7 and m1.retries == 4 and m2.retries == 0
    assert m1.base_url == "http://127.0.0.1:9/v1" and m1.upstream_model == "m1"
    assert m2.upstream_model == "upstream-m2"
    assert config.routes[0].artifact == tmp_path / "artifacts/a"
    assert config.decision_log.url == f"sqlite:///{tmp_path / 'logs/d.sqlite3'}"
    assert config.monitor.delta == 0.05 and config.server.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"backends": []}, "backends: List should have at least 1 item"),
        ({"routes": [{"name": "r"}]}, "routes.0.artifact: Field required"),
        ({"backends": [{"name": "m1", "base_url": "ftp://x"}]}, "backends.0.base_url"),
        ({"backends": [{"name": "m1", "base_url": "http://a", "timeout_s": -1}]}, "timeout_s"),
        ({"backends": MINIMAL["backends"] * 2}, "repeated: ['m1', 'm2']"),
        ({"routes": [{"name": "r", "artifact": "a", "fallbacks": ["zz"]}]}, "fallbacks ['zz']"),
        ({"routes": [{"name": "r", "artifact": "a", "aggregator": "judge"}]}, "aggregator"),
        ({"retry": 3}, "retry: Extra inputs are not permitted"),
        ({"decision_log": {"url": "mysql://db"}}, "decision_log.url"),
        ({"monitor": {"delta": 2}}, "monitor.delta"),
    ],
)
def test_invalid_configurations_are_refused_saying_where(change, message):
    with pytest.raises(ConfigError, match="Invalid gateway configuration") as error:
        parse_config({**MINIMAL, **change})
    assert message in str(error.value)


def test_missing_or_broken_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "backends: [unclosed"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path, "- a list"))


def test_gateway_keys_come_from_the_file_and_the_environment(monkeypatch):
    monkeypatch.setenv("RACER_GATEWAY_KEYS", " k2, k3 ,")
    config = parse_config({**MINIMAL, "auth": {"api_keys": ["k1"]}})
    assert config.auth.resolve_keys() == {"k1", "k2", "k3"}
    monkeypatch.delenv("RACER_GATEWAY_KEYS")
    with pytest.raises(ConfigError, match="no gateway API key"):
        parse_config(MINIMAL).auth.resolve_keys()
    open_config = parse_config({**MINIMAL, "auth": {"allow_unauthenticated": True}})
    assert open_config.auth.resolve_keys() == frozenset()


def test_a_shadow_is_a_route_of_its_own_with_a_free_name(tmp_path):
    routes = [{"name": "racer", "artifact": "a", "shadow": {"artifact": "candidate"}}]
    config = parse_config({**MINIMAL, "routes": routes}, base_dir=tmp_path)
    shadow = config.routes[0].shadow_route
    assert (shadow.name, shadow.artifact, shadow.shadow) == (
        "racer.shadow",
        tmp_path / "candidate",
        None,
    )
    clash = [*routes, {"name": "racer.shadow", "artifact": "b"}]
    with pytest.raises(ConfigError, match=r"shadow names must differ.*'racer.shadow'"):
        parse_config({**MINIMAL, "routes": clash})
