"""Settings: TOML + flags, and every bad value refused with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokentop.config import Config, ConfigError, EndpointConfig, load_config, parse_endpoint_flag


def test_endpoint_flag_options() -> None:
    e = parse_endpoint_flag("http://10.0.0.5:8000,kind=vllm,name=big,gpus=0+GPU-ab,token_env=KEY")
    assert (e.url, e.kind, e.name, e.gpus, e.token_env) == (
        "http://10.0.0.5:8000",
        "vllm",
        "big",
        ("0", "GPU-ab"),
        "KEY",
    )
    assert parse_endpoint_flag("http://h:30000/metrics").name == "h:30000"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("h:8000", "http://"),
        ("http://host:abc", "not usable"),
        ("http://[::1", "not usable"),
        ("http://", "no host"),
        ("http://user:pw@h:1", "token_env"),
        ("http://h:1/metrics?api_key=pw", "token_env"),
    ],
)
def test_unusable_endpoint_urls_are_refused(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        EndpointConfig(url=url)
    assert "pw" not in str(info.value)  # a password in a URL is not repeated back


def test_llamacpp_router_model_query_is_kept() -> None:
    assert EndpointConfig(url="http://h:8080/metrics?model=gemma").url.endswith("?model=gemma")


def test_unknown_kind_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="known: vllm"):
        EndpointConfig(url="http://h:1", kind="vlm")


def test_two_endpoints_with_one_name_are_refused_but_the_same_one_twice_counts_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give each its own name"):
        Config(endpoints=(EndpointConfig("http://h:8000/metrics"), EndpointConfig("http://h:8000/v1/metrics")))
    toml = tmp_path / "c.toml"
    toml.write_text('[[endpoints]]\nurl = "http://h:8000"\n')
    config = load_config(toml, endpoints=(EndpointConfig("http://h:8000"),))
    assert len(config.endpoints) == 1


@pytest.mark.parametrize(
    "setting",
    [
        "interval_s = 0",
        'process_interval_s = "a"',
        "rate_window_s = -5",
        "raw_retention_h = -1",
        "max_page_bytes = 0",
        "http_timeout_s = 1e9",
        "cost_window_s = true",
    ],
)
def test_bad_numbers_name_the_setting(tmp_path: Path, setting: str) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(setting + "\n")
    with pytest.raises(ConfigError, match=setting.split(" ")[0]):
        load_config(toml)


def test_unknown_setting_and_bad_toml(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("colour = 'red'\n")
    with pytest.raises(ConfigError, match="not understood"):
        load_config(toml)
    toml.write_text("[cost\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(toml)


def test_public_dict_holds_the_variable_name_never_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY", "sk-secret-value")
    config = Config(endpoints=(EndpointConfig("http://h:1", token_env="KEY"),))
    assert config.endpoints[0].bearer_token() == "sk-secret-value"
    assert "sk-secret-value" not in repr(config.public_dict()) and "KEY" in repr(config.public_dict())


def test_timeout_is_80_percent_of_the_interval_and_capped() -> None:
    assert Config(interval_s=1.0).timeout_s == pytest.approx(0.8)
    assert Config(interval_s=600).timeout_s == 10.0


def test_every_kind_the_config_accepts_has_a_reader_and_no_reader_is_unreachable() -> None:
    from tokentop.collectors.kinds import DEFAULT_SPECS
    from tokentop.config import ENDPOINT_KINDS

    assert set(ENDPOINT_KINDS) == set(DEFAULT_SPECS) | {"ollama"}
