"""The fleet's PromQL builders (``tokentop.fleet.promql``), without a Prometheus: label values
escaped, a fixed number of queries whatever the fleet's size, graph steps under 500 points,
durations in whole milliseconds."""

from __future__ import annotations

import re

import pytest

from tokentop.fleet import promql


def unquote(literal: str) -> str:
    """A PromQL double-quoted string literal's value (the escapes ``quote`` writes)."""
    assert literal.startswith('"') and literal.endswith('"'), literal
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), literal[1:-1])


@pytest.mark.parametrize("text", ["h1", 'we"ird', "back\\slash", "new\nline", 'all\\"\n', "ünï ☃"])
def test_quote_round_trips(text: str) -> None:
    literal = promql.quote(text)
    assert unquote(literal) == text
    assert "\n" not in literal  # a raw newline would end the literal


def test_a_focused_host_is_matched_by_an_escaped_label_value() -> None:
    parts = promql.tokentop_window_parts(10.0, 'h"1\\')
    for expr in parts.values():
        assert '{host="h\\"1\\\\"}' in expr
    assert all("{host=" not in expr for expr in promql.tokentop_window_parts(10.0).values())
    latest = promql.tokentop_latest_parts(10.0, "h2")
    assert all('{host="h2"}' in expr for expr in latest.values())


def test_focus_adds_parts_for_one_host_only() -> None:
    everyone = promql.tokentop_hosts_latest(10.0, None)
    opened = promql.tokentop_hosts_latest(10.0, "h2")
    assert 'host="h2"' not in everyone and opened.startswith(everyone)
    assert opened.count('host="h2"') == len(promql.tokentop_latest_parts(10.0))
    for expr in promql.host_window_parts(10.0).values():
        assert "by (host" in expr and "gpu" not in expr.split("by (", 1)[1].split(")", 1)[0]


@pytest.mark.parametrize("text", ["gpu-a", "10.0.0.7", "a.b*c+d?e(f)[g]{h}|i^j$k\\l"])
def test_regex_quote_matches_the_text_literally(text: str) -> None:
    pattern = unquote('"' + promql.regex_quote(text) + '"')
    assert re.fullmatch(pattern + "(:[0-9]+)?", text + ":9400")
    assert re.fullmatch(pattern, text)
    if "." in text:
        assert not re.fullmatch(pattern, text.replace(".", "X", 1))


def test_the_graph_selects_one_host_by_its_instance() -> None:
    query = promql.agentless_graph(60.0, "10.0.0.7")
    assert 'instance=~"10\\\\.0\\\\.0\\\\.7(:[0-9]+)?"' in query
    assert "instance=~" not in promql.agentless_graph(60.0, None)


@pytest.mark.parametrize("span_s", [1.0, 60.0, 499.0, 500.0, 3600.0, 86400.0, 7 * 86400.0, 31 * 86400.0])
def test_graph_steps_keep_under_500_points(span_s: float) -> None:
    step = promql.graph_step(span_s)
    assert step >= 1.0 and step == int(step)
    assert span_s // step + 1 <= 500  # Prometheus returns start, start+step, …, end
    assert 2 * (span_s // step + 1) >= min(span_s + 1, 500)  # whole seconds: at most twice too coarse


@pytest.mark.parametrize(("seconds", "text"), [(1.5, "1500ms"), (900.0, "900000ms"), (0.0, "1ms"), (0.0004, "1ms")])
def test_durations_are_whole_milliseconds(seconds: float, text: str) -> None:
    assert promql.duration(seconds) == text


def test_union_tags_each_part() -> None:
    query = promql.union({"a": "up", 'b"': "sum(up)"})
    assert query == 'label_replace(up, "tt_q", "a", "", "") or label_replace(sum(up), "tt_q", "b\\"", "", "")'


def test_queries_do_not_depend_on_the_fleet() -> None:
    """One query per answer, aggregated by label, never per host: the texts take no host list."""
    window = promql.tokentop_hosts_window(60.0, "h1")
    assert window == promql.tokentop_hosts_window(60.0, "h1") and window.count(" or ") < 40
    assert promql.QUERIES_PER_REFRESH <= 10
    assert "increase(tokentop_gpu_cost_usd_total[60000ms])" in promql.tokentop_window(60.0)
    assert "changes(vllm:generation_tokens_total[900000ms])" in promql.agentless_window(900.0, busy=True)
    assert "changes(" not in promql.agentless_window(900.0, busy=False)
    with_latency = promql.agentless_window(900.0, busy=True, latency=True)
    assert "histogram_quantile(0.95, sum by (le, " in with_latency
    one_per_group = f"max without ({promql.REPEATING})"
    assert f"{one_per_group} (increase(vllm:time_to_first_token_seconds_bucket[900000ms]))" in with_latency
    assert f"sum by ({promql.SERVER_BY}) ({one_per_group} (sglang:num_running_reqs))" in promql.agentless_latest(60.0)
    assert "histogram_quantile" not in promql.agentless_window(900.0, busy=True)


def test_blank_value_sentinels_are_filtered_in_the_query() -> None:
    latest = promql.agentless_latest(60.0)
    assert f"DCGM_FI_DEV_POWER_USAGE < {promql.FP64_BLANK_BELOW:g}" in latest
    assert f"DCGM_FI_DEV_GPU_UTIL < {promql.FP64_BLANK_BELOW:g}" in latest
    assert f"DCGM_FI_DEV_GPU_TEMP < {promql.FP64_BLANK_BELOW:g}" in latest
    assert f"DCGM_FI_DEV_FB_USED < {promql.FP64_BLANK_BELOW:g}" in latest
    assert 9223372036854775794 > promql.FP64_BLANK_BELOW > 5000 * 1000  # above any real reading


def test_a_newline_in_a_regex_literal_is_escaped() -> None:
    literal = promql.regex_quote("a\nb")
    assert "\n" not in literal and re.fullmatch(unquote('"' + literal + '"'), "a\nb")


@pytest.mark.parametrize(
    ("host", "instances", "not_instances"),
    [
        ("gpu-a", ["gpu-a", "gpu-a:9400"], ["gpu-ab:9400", "xgpu-a"]),
        ("fe80::1", ["fe80::1", "[fe80::1]:9400"], ["[fe80::12]:9400", "fe80::1:9400"]),
    ],
)
def test_an_instance_regex_matches_the_hosts_instances_only(
    host: str, instances: list[str], not_instances: list[str]
) -> None:
    pattern = unquote('"' + promql.instance_regex(host) + '"')
    assert all(re.fullmatch(pattern, i) for i in instances)
    assert not any(re.fullmatch(pattern, i) for i in not_instances)


def test_the_graph_divides_cost_by_the_tokens_of_priced_gpus_only() -> None:
    query = promql.tokentop_graph(60.0, "h1")
    priced = query.split('"priced_tok_s_out"')[0].rsplit("label_replace(", 1)[1]
    assert "and on (host, uuid) rate(tokentop_gpu_cost_usd_total{" in priced and 'host="h1"' in priced
