"""Settings: TOML + flags, and every bad value refused with a message naming it."""

from __future__ import annotations

import os
import re
from dataclasses import fields
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from tokentop.config import (
    ApiPrice,
    Config,
    ConfigError,
    CostConfig,
    EndpointConfig,
    PrometheusConfig,
    SshHostConfig,
    load_config,
    parse_endpoint_flag,
)


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
        ("http://user:pw@h:99999", "credentials"),  # the port is wrong too: credentials come first
        ("http://user:pw@[::1", "not usable"),
        ("http://h:99999/metrics?model=pw", "not usable"),
    ],
)
def test_unusable_endpoint_urls_are_refused(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        EndpointConfig(url=url)
    assert "pw" not in str(info.value)  # a password in a URL is not repeated back


def test_llamacpp_router_model_query_is_kept() -> None:
    assert EndpointConfig(url="http://h:8080/metrics?model=gemma").url.endswith("?model=gemma")


def test_unknown_kind_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="kind: must be one of vllm, sglang"):
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


# --- every field checked against its type, in one place (issue 9, item 9) ---------------------

# Where each settings class sits in a TOML file, with what it needs besides the field tried.
PLACES = {
    Config: ("", ""),
    CostConfig: ("[cost]\n", ""),
    EndpointConfig: ("[[endpoints]]\n", 'url = "http://h:1"\n'),
    ApiPrice: ("[[cost.api_prices]]\n", 'name = "api"\nusd_per_mtok_in = 1\nusd_per_mtok_out = 1\n'),
}
KEY_PREFIX = {Config: "", CostConfig: "cost.", EndpointConfig: "endpoints[0].", ApiPrice: "cost.api_prices[0]."}


def _wrong_value(cls: type, name: str) -> str:
    """A TOML value of the wrong type for the field: a number where text is meant, else text."""
    hint = get_type_hints(cls)[name]
    text_like = {str, Path} & {hint, *get_args(hint)}
    return "5" if text_like else '"x"'


@pytest.mark.parametrize(
    ("cls", "name"), [(cls, f.name) for cls in PLACES for f in fields(cls)], ids=lambda v: getattr(v, "__name__", v)
)
def test_every_field_refuses_a_value_of_the_wrong_type_naming_its_key(tmp_path: Path, cls: type, name: str) -> None:
    header, needed = PLACES[cls]
    needed = "\n".join(line for line in needed.splitlines() if not line.startswith(f"{name} ="))
    toml = tmp_path / "c.toml"
    toml.write_text(f"{header}{needed}\n{name} = {_wrong_value(cls, name)}\n")
    with pytest.raises(ConfigError) as info:
        load_config(toml)
    message = str(info.value)
    assert f"{KEY_PREFIX[cls]}{name}: must be " in message and str(toml) in message and "\n" not in message


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ('energy_in_rate = "false"', "cost.energy_in_rate: must be true or false"),
        ("pue = nan", "cost.pue: must be a finite number, not nan"),
        ("electricity_usd_per_kwh = inf", "cost.electricity_usd_per_kwh: must be a finite number"),
        ("capex_usd = -1", "cost.capex_usd: must be at least 0, not -1"),
        ("[cost.gpu_hour_usd]\nH200 = nan", "cost.gpu_hour_usd.H200: must be a finite number"),
        ("[cost.gpu_hour_usd]\nH200 = -2", "cost.gpu_hour_usd.H200: must be at least 0"),
        (
            '[[cost.api_prices]]\nname = "a"\nusd_per_mtok_in = -1\nusd_per_mtok_out = 1',
            "cost.api_prices[0].usd_per_mtok_in: must be at least 0, not -1",
        ),
        (
            '[[cost.api_prices]]\nname = "a"\nusd_per_mtok_in = 1\nusd_per_mtok_out = nan',
            "cost.api_prices[0].usd_per_mtok_out: must be a finite number, not nan",
        ),
        (
            '[[cost.api_prices]]\nname = "a"\nusd_per_mtok_in = 1',
            "cost.api_prices[0]: setting 'usd_per_mtok_out' is missing",
        ),
        ("api_prices = 5", "cost.api_prices: must be a list, not the number 5"),
        ("gpu_hour_usd = 5", "cost.gpu_hour_usd: must be a table"),
    ],
)
def test_bad_cost_values_name_the_key(tmp_path: Path, toml: str, words: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[cost]\n{toml}\n")
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(path)


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ('history = "no"', "history: must be true or false (a TOML boolean, without quotes), not the string 'no'"),
        ('seed = "x"', "seed: must be a whole number, not the string 'x'"),
        ("seed = 1.5", "seed: must be a whole number, not the number 1.5"),
        ("interval_s = nan", "interval_s: must be a finite number, not nan"),
        ("max_endpoint_tok_s = 0", "max_endpoint_tok_s: must be between 1 and 1e+09, not 0"),
        ("interval_s = 1" + "0" * 400, "interval_s: must be a finite number, not a number too large to use"),
        ("[[endpoints]]\nname = 'x'", "endpoints[0]: setting 'url' is missing"),
        ('endpoints = "http://h:1"', "endpoints: must be a list, not the string 'http://h:1'"),
        ("[[endpoints]]\nurl = 5", "endpoints[0].url: must be a string (in quotes), not the number 5"),
        ('[[endpoints]]\nurl = "http://h:1"\ngpus = "12"', "endpoints[0].gpus: must be a list, not the string '12'"),
        ('[[endpoints]]\nurl = "http://h:1"\ngpus = [true]', "endpoints[0].gpus[0]: must be a string"),
        ('[[endpoints]]\nurl = "http://h:1"\ncolour = "red"', "endpoints[0]: setting 'colour' not understood"),
        ("[cost]\nmode = 'lease'", "cost.mode: must be one of cloud, owned, not 'lease'"),
    ],
)
def test_bad_values_anywhere_name_the_key(tmp_path: Path, toml: str, words: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(path)


def test_values_are_stored_in_their_normal_form(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        'interval_s = 2\ndb_path = "~/h.db"\n[cost.gpu_hour_usd]\nH200 = 2\n'
        '[[endpoints]]\nurl = "http://h:1"\ngpus = [0, "GPU-ab"]\n'
    )
    config = load_config(path)
    assert config.interval_s == 2.0 and isinstance(config.interval_s, float)
    assert config.db_path == Path("~/h.db").expanduser()
    assert config.endpoints[0].gpus == ("0", "GPU-ab")  # an index may be written as a number
    assert config.cost.gpu_hour_usd == {"H200": 2.0}
    assert Config(endpoints=[EndpointConfig("http://h:1", gpus=["1"])]).endpoints[0].gpus == ("1",)


@pytest.mark.parametrize(
    "toml",
    [
        '[[endpoints]]\nurl = "http://h:1"\nname = "\\u001b[2J\\u001b]0;owned\\u0007"',
        '[[endpoints]]\nurl = "http://h:1"\nname = "llama\\u202e"',  # a bidi override
        '[cost.gpu_hour_usd]\n"H200\\u001b[31m" = 1.0',
        '[[cost.api_prices]]\nname = "a\\nb"\nusd_per_mtok_in = 1\nusd_per_mtok_out = 1',
        '[[endpoints]]\nurl = "http://h:1/\\u001b[2J"',
    ],
)
def test_names_with_control_characters_are_refused_never_echoed(tmp_path: Path, toml: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError, match="control or invisible character") as info:
        load_config(path)
    assert str(info.value).isprintable()


def test_an_overlong_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="name: is longer than 200 characters"):
        EndpointConfig("http://h:1", name="n" * 201)


def test_a_config_path_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*: Is a directory"):
        load_config(tmp_path)


def test_energy_in_rate_is_resolved_by_mode_and_stored_resolved() -> None:
    assert Config().public_dict()["cost"]["energy_in_rate"] is True
    assert Config(cost=CostConfig(mode="owned")).public_dict()["cost"]["energy_in_rate"] is False


# --- the live view's $/Mtok colours and its characters (issue 10) --------------------------------


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ("usd_per_mtok_thresholds = [5, 1]", "cost.usd_per_mtok_thresholds: must go up (each number below the next)"),
        ("usd_per_mtok_thresholds = [2, 2]", "cost.usd_per_mtok_thresholds: must go up"),
        ("usd_per_mtok_thresholds = [1]", "cost.usd_per_mtok_thresholds: must be a list of 2 values, not 1"),
        ("usd_per_mtok_thresholds = [1, 2, 3]", "cost.usd_per_mtok_thresholds: must be a list of 2 values, not 3"),
        ("usd_per_mtok_thresholds = [-1, 2]", "cost.usd_per_mtok_thresholds[0]: must be at least 0, not -1"),
        ('usd_per_mtok_thresholds = [1, "5"]', "cost.usd_per_mtok_thresholds[1]: must be a number"),
        ("usd_per_mtok_thresholds = [1, nan]", "cost.usd_per_mtok_thresholds[1]: must be a finite number"),
    ],
)
def test_usd_per_mtok_thresholds_are_two_numbers_going_up(tmp_path: Path, toml: str, words: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[cost]\n{toml}\n")
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(path)


def test_usd_per_mtok_thresholds_from_the_file_colour_the_live_view(tmp_path: Path) -> None:
    from tokentop.tui.app import TokentopApp
    from tokentop.tui.columns import DEFAULT_BANDS, CostBands

    path = tmp_path / "c.toml"
    path.write_text("[cost]\nusd_per_mtok_thresholds = [0.5, 2]\n")
    config = load_config(path)
    assert config.cost.usd_per_mtok_thresholds == (0.5, 2.0)
    assert config.public_dict()["cost"]["usd_per_mtok_thresholds"] == (0.5, 2.0)
    assert TokentopApp(config, handle_signals=False).bands == CostBands(0.5, 2.0)
    assert TokentopApp(Config(), handle_signals=False).bands == DEFAULT_BANDS


@pytest.mark.parametrize(
    ("environment", "utf8"),
    [
        ({"LANG": "C.UTF-8"}, True),
        ({"LC_ALL": "C.UTF-8", "LANG": "C"}, True),
        ({"LANG": "C"}, False),  # Python runs in UTF-8 by itself there: the terminal was not said to
        ({"LC_ALL": "C"}, False),
        ({"LANG": "POSIX"}, False),
        ({}, False),  # cron: no locale at all
        ({"LANG": "C", "PYTHONUTF8": "1"}, True),  # asked for
    ],
)
def test_ascii_only_is_chosen_when_the_locale_is_not_utf8(environment: dict[str, str], utf8: bool) -> None:
    import subprocess
    import sys

    code = "from tokentop.config import load_config, speaks_utf8; print(speaks_utf8(), load_config(None).ascii_only)"
    env = {"PATH": os.environ.get("PATH", ""), **environment}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(utf8), str(not utf8)]
    assert load_config(None, ascii_only=True).ascii_only is True  # --ascii whatever the locale
    assert load_config(None, ascii_only=False).ascii_only is False  # --no-ascii


# --- the fleet's settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ('[prometheus]\nurl = "ftp://x"', "prometheus.url: must start with http:// or https://: 'ftp://x'"),
        ('[prometheus]\nurl = "http://user:pw@x"', "prometheus.url: 'http://…@x' carries credentials"),
        (
            '[prometheus]\nurl = "http://x:9090/?token=pw"',
            "prometheus.url: 'http://x:9090/': query 'token' not accepted",
        ),
        (
            '[prometheus]\nurl = "http://x:9090"\nrefresh_s = 0',
            "prometheus.refresh_s: must be between 0.5 and 3600, not 0",
        ),
        (
            '[prometheus]\nurl = "http://x:9090"\ntimeout_s = 0',
            "prometheus.timeout_s: must be between 0.1 and 60, not 0",
        ),
        ('[[hosts]]\nssh = "-oProxyCommand=x"', "hosts[0].ssh: not an ssh target: '-oProxyCommand=x'"),
        ('[[hosts]]\nssh = ""', "hosts[0].ssh: not an ssh target: ''"),
        ('[[hosts]]\nssh = "a b"', "hosts[0].ssh: not an ssh target: 'a b'"),
        ('[[hosts]]\nssh = "g1"\n[[hosts]]\nssh = "g2:99999"', "hosts[1].ssh: port 99999 of 'g2:99999' is not between"),
        ('[[hosts]]\nssh = "me@[::1]:0"', "hosts[0].ssh: port 0 of 'me@[::1]:0' is not between 1 and 65535"),
        ('[[hosts]]\nssh = "g1"\ncommand = " "', "hosts[0].command: is empty"),
        ('[[hosts]]\ncommand = "tokentop"', "hosts[0]: setting 'ssh' is missing"),
        ('[[hosts]]\nssh = "g1"\n[[hosts]]\nssh = "g1"', "two hosts are called 'g1': give each its own name="),
        (
            '[prometheus]\nurl = "http://x:9090"\n[[hosts]]\nssh = "g1"',
            "not both: give prometheus.url (--prometheus) or hosts (--ssh)",
        ),
    ],
)
def test_bad_fleet_settings_name_the_key_and_never_echo_a_credential(tmp_path: Path, toml: str, words: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=re.escape(words)) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "pw" not in message


def test_a_bare_ipv6_address_and_a_host_alias_are_ssh_targets() -> None:
    assert [SshHostConfig(ssh=t).name for t in ("fe80::1", "gpu-1", "[fe80::1]:2200")] == [
        "fe80::1",
        "gpu-1",
        "[fe80::1]:2200",
    ]


@pytest.mark.parametrize(
    ("prometheus", "words"),
    [
        ({"url": "ftp://x"}, "--prometheus: must start with http:// or https://"),
        ({"url": "http://user:pw@x"}, "--prometheus: 'http://…@x' carries credentials"),
        ({"url": "http://x", "token_env": "A\x1bB"}, "--prometheus-token-env: holds a control"),
        ({"url": "http://x", "token_env": "1BAD"}, "--prometheus-token-env: must be an environment variable's name"),
    ],
)
def test_a_bad_prometheus_flag_is_named_by_the_flag(prometheus: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)) as info:
        load_config(None, prometheus=prometheus)
    assert "pw" not in str(info.value)


def test_prometheus_flags_go_on_top_of_the_files_table(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[prometheus]\nurl = "http://a:9090"\nrefresh_s = 2\n')
    config = load_config(path, prometheus={"token_env": "PROM_TOKEN"})
    assert (config.prometheus.url, config.prometheus.refresh_s, config.prometheus.token_env) == (
        "http://a:9090",
        2.0,
        "PROM_TOKEN",
    )


@pytest.mark.parametrize("name", ["1BAD", "A-B", "PROM TOKEN", "$TOKEN"])
def test_a_token_env_must_be_a_name_a_shell_can_export(name: str) -> None:
    """Such a variable can never be set: said when the settings are read, not at the first request."""
    for make in (lambda: EndpointConfig("http://h:1", token_env=name), lambda: PrometheusConfig(token_env=name)):
        with pytest.raises(ConfigError, match="token_env: must be an environment variable's name"):
            make()
    assert EndpointConfig("http://h:1", token_env="_VLLM_KEY2").token_env == "_VLLM_KEY2"
