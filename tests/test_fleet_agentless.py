"""The agentless join (``tokentop.fleet.agentless``) fed with Prometheus HTTP API answers, without
a Prometheus: the answers a real Prometheus 2.42 gave to tokentop's own agentless queries over
scripted dcgm-exporter and server pages (``tests/fixtures/prometheus``, see SOURCES.md), and
small answers written in the same JSON for the cases a scrape cannot script.

Expected figures are hand arithmetic on the answers' own values (read here straight from the
JSON, not through tokentop) and on the scenario: tok/s, W per GPU, the built-in prices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tokentop.config import CostConfig
from tokentop.cost import energy_cost_usd
from tokentop.fleet.agentless import Agentless, instance_host
from tokentop.fleet.prom_exporters import HostRead, Parts
from tokentop.fleet.prometheus_api import PromError, vector_answer

FIXTURES = Path(__file__).parent / "fixtures" / "prometheus"
SCENARIO = json.loads((FIXTURES / "agentless-scenario.json").read_text())
COST_S, RATE_S = SCENARIO["cost_window_s"], SCENARIO["rate_window_s"]
H100, H200, A100 = 2.50, 3.50, 1.40  # $/GPU-hour, tokentop's built-in table
UUID_A = ("GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52", "GPU-7b1e3a52-0c4d-4e0f-9d6a-2f1c8e5b7a90")


def captured(name: str) -> Parts:
    return vector_answer((FIXTURES / f"agentless-{name}.json").read_bytes()).parts()


def raw(name: str, part: str, **labels: str) -> list[float]:
    """Values of one part of a captured answer, straight from its JSON."""
    result = json.loads((FIXTURES / f"agentless-{name}.json").read_text())["data"]["result"]
    return [
        float(r["value"][1])
        for r in result
        if r["metric"]["tt_q"] == part and all(r["metric"].get(k) == v for k, v in labels.items())
    ]


def hosts(
    cost: Parts, rate: Parts, latest: Parts, prices: CostConfig | None = None
) -> tuple[dict[str, HostRead], list[str]]:
    reads, messages = Agentless(
        cost, rate, latest, RATE_S, COST_S, prices or CostConfig(), SCENARIO["at"], COST_S
    ).hosts()
    return {r.name: r for r in reads}, messages


@pytest.fixture(scope="module")
def fleet() -> tuple[dict[str, HostRead], list[str]]:
    return hosts(captured("cost"), captured("rate"), captured("latest"))


def test_join_by_exported_pod_gives_the_pods_gpus_as_its_tensor_parallel_group(fleet: Any) -> None:
    a = fleet[0]["gpu-a"]
    assert a.join == "pod" and [e.sample.name for e in a.endpoints] == ["default/vllm-70b"]
    assert a.endpoints[0].gpus == UUID_A  # TP=2: the two GPUs its pod holds
    tokens = raw("cost", "srv|vllm|out|vllm:generation_tokens_total", pod="vllm-70b")
    assert [g.cost_window.tokens_out for g in a.gpus] == [tokens[0] / 2] * 2  # split equally
    assert a.endpoints[0].tok_s_out == pytest.approx(SCENARIO["tok_s_out"]["a"])


def test_join_by_pod_label_when_the_scrape_honours_labels(fleet: Any) -> None:
    c = fleet[0]["gpu-c"]
    assert c.join == "pod" and c.endpoints[0].sample.name == "default/sglang-a"
    assert c.endpoints[0].gpus == ("GPU-c0c0c0c0-d9cf-fef3-62e9-d92044ab6e52",)  # two MIG rows, one GPU


def test_join_by_host_without_pods(fleet: Any) -> None:
    b = fleet[0]["gpu-b"]
    assert b.join == "host" and b.endpoints[0].sample.name == "vllm@gpu-b:8000"
    assert b.endpoints[0].gpus == ("GPU-b0b0b0b0-d9cf-fef3-62e9-d92044ab6e52",)
    assert b.endpoints[0].tok_s_out == pytest.approx(SCENARIO["tok_s_out"]["b"])


def test_a_server_on_no_known_gpu_is_left_out_and_said(fleet: Any) -> None:
    names, messages = fleet
    assert set(names) == {"gpu-a", "gpu-b", "gpu-c"}
    assert messages == ["1 server(s) on no GPU dcgm-exporter reports, left out: gpu-z:8000"]


def test_mig_power_is_taken_once_never_summed(fleet: Any) -> None:
    c = fleet[0]["gpu-c"]
    assert len(c.gpus) == 1 and c.figures.gpu_count == 1
    assert c.figures.power_w == SCENARIO["watts_per_gpu"]["c"]  # 250 W, not 2 x 250
    assert c.gpus[0].sample.utilization_pct == 40.0  # the other MIG row's blank sentinel dropped


def test_energy_in_mj_and_in_j_are_told_apart(fleet: Any) -> None:
    a, b = fleet[0]["gpu-a"], fleet[0]["gpu-b"]
    counted_a = raw("cost", "energy|DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", gpu="0", Hostname="gpu-a")
    assert a.gpus[0].cost_window.energy_j == pytest.approx(counted_a[0] / 1000)  # mJ (before 4.9.0)
    counted_b = raw("cost", "energy|DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", hostname="gpu-b")
    assert b.gpus[0].cost_window.energy_j == pytest.approx(counted_b[0])  # J (4.9.0 and later)
    assert a.gpus[0].energy_method == b.gpus[0].energy_method == "counter"
    # tok/J is tok/s over W, whichever unit the counter counts in
    assert a.figures.cost_window.tokens_out / a.figures.cost_window.energy_j == pytest.approx(1000 / 800)
    assert b.figures.cost_window.tokens_out / b.figures.cost_window.energy_j == pytest.approx(500 / 300)


def test_utilisation_in_percent_and_as_a_ratio_are_told_apart(fleet: Any) -> None:
    assert [g.sample.utilization_pct for g in fleet[0]["gpu-a"].gpus] == [87.0, 85.0]  # % before 4.9.0
    assert fleet[0]["gpu-b"].gpus[0].sample.utilization_pct == 50.0  # 0.5 from 4.9.0


def test_price_by_model_name(fleet: Any) -> None:
    prices = {h: [g.price.usd_per_gpu_hour if g.price else None for g in r.gpus] for h, r in fleet[0].items()}
    assert prices == {"gpu-a": [H100, H100], "gpu-b": [H200], "gpu-c": [A100]}
    a = fleet[0]["gpu-a"].figures.cost_window
    assert a.cost_usd == pytest.approx(2 * H100 * COST_S / 3600)  # charged for the whole window
    assert a.usd_per_mtok == pytest.approx(a.cost_usd / a.tokens_out * 1e6)
    configured, _ = hosts(
        captured("cost"), captured("rate"), captured("latest"), CostConfig(gpu_hour_usd={"A100": 1.0})
    )
    assert configured["gpu-c"].gpus[0].price is not None and configured["gpu-c"].gpus[0].price.usd_per_gpu_hour == 1.0
    assert configured["gpu-c"].figures.cost_window.cost_usd == pytest.approx(1.0 * COST_S / 3600)


def test_an_unknown_model_has_no_price_and_no_cost() -> None:
    gpu = {"UUID": "GPU-x", "gpu": "0", "instance": "gpu-x:9400", "modelName": "Mystery Accelerator 9000"}
    names, _ = hosts(answer({"power_avg": [(gpu, "300")]}), answer({}), answer({"power": [(gpu, "300")]}))
    x = names["gpu-x"]
    assert x.gpus[0].price is None and x.figures.cost_window.cost_usd is None
    assert x.figures.unpriced_gpus == ("GPU-x",)


# --- answers written in the API's JSON, for what a scrape cannot script -------------------------


def answer(parts: dict[str, list[tuple[dict[str, str], str]]]) -> Parts:
    """A ``promql.union`` answer: each part's series tagged ``tt_q``, values as the API's strings."""
    result = [
        {"metric": {**labels, "tt_q": part}, "value": [SCENARIO["at"], value]}
        for part, series in parts.items()
        for labels, value in series
    ]
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})
    return vector_answer(body.encode()).parts()


SLICED = {
    "UUID": "GPU-s",
    "gpu": "0",
    "instance": "gpu-s:9400",
    "modelName": "NVIDIA H100 80GB HBM3",
    "Hostname": "gpu-s",
}
POD_1 = {**SLICED, "exported_pod": "chat", "exported_namespace": "ml"}
POD_2 = {**SLICED, "exported_pod": "embed", "exported_namespace": "ml"}


def server(pod: str) -> dict[str, str]:
    return {"instance": f"10.1.0.{len(pod)}:8000", "pod": pod, "namespace": "ml"}


def sliced(energy_cost: str = "1800000", power_avg: str = "300") -> Parts:
    """One time-sliced H100 shared by two pods: dcgm-exporter repeats the GPU's values per pod."""
    out = "srv|vllm|out|vllm:generation_tokens_total"
    return answer(
        {
            "energy|DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": [(POD_1, energy_cost), (POD_2, energy_cost)],
            "power_avg": [(POD_1, power_avg), (POD_2, power_avg)],
            out: [(server("chat"), "600"), (server("embed"), "300")],
        }
    )


def sliced_rate() -> Parts:
    return answer(
        {
            "energy|DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": [(POD_1, "1200000"), (POD_2, "1200000")],
            "srv|vllm|out|vllm:generation_tokens_total": [(server("chat"), "400"), (server("embed"), "200")],
        }
    )


def test_a_time_sliced_gpu_is_counted_once_with_every_pods_tokens() -> None:
    latest = answer({"power": [(POD_1, "300"), (POD_2, "300")]})
    names, messages = hosts(sliced(), sliced_rate(), latest)
    s = names["gpu-s"]
    assert messages == [] and s.figures.gpu_count == 1 and s.figures.power_w == 300.0
    assert sorted(e.sample.name for e in s.endpoints) == ["ml/chat", "ml/embed"]
    assert all(e.gpus == ("GPU-s",) for e in s.endpoints)
    window = s.figures.cost_window
    assert window.tokens_out == 900.0  # both pods' tokens on the one GPU
    assert window.energy_j == pytest.approx(1800.0)  # mJ (1.2e6 units in 4 s is 3e5 a second), once
    assert window.cost_usd == pytest.approx(H100 * COST_S / 3600)  # one GPU's hour rate, not two


def test_a_blank_value_sentinel_never_becomes_a_reading() -> None:
    sentinel = "9223372036854775794"
    names, _ = hosts(sliced(energy_cost=sentinel), sliced_rate(), answer({}))
    window = names["gpu-s"].figures.cost_window
    assert window.energy_j == pytest.approx(300.0 * COST_S)  # the counter disagrees: mean power x window
    assert names["gpu-s"].gpus[0].energy_method == "power_integral"
    names, _ = hosts(sliced(power_avg=sentinel), sliced_rate(), answer({}))
    assert names["gpu-s"].figures.cost_window.energy_j == pytest.approx(1800.0)  # the counter, unchecked
    assert names["gpu-s"].figures.power_w is None  # no latest power: never the sentinel


def test_a_watt_counter_is_read_as_joules() -> None:
    rate = answer({"energy|DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": [(POD_1, "1200"), (POD_2, "1200")]})
    names, _ = hosts(sliced(energy_cost="1800"), rate, answer({}))
    assert names["gpu-s"].figures.cost_window.energy_j == pytest.approx(1800.0)  # 300 units a second: J


def test_an_error_answer_is_a_prom_error_not_a_result() -> None:
    with pytest.raises(PromError, match="bad_data: parse error"):
        vector_answer(b'{"status":"error","errorType":"bad_data","error":"parse error"}', status=400)
    with pytest.raises(PromError, match="not a vector"):
        vector_answer(b'{"status":"success","data":{"resultType":"matrix","result":[]}}')


def test_bad_series_are_dropped_and_non_finite_values_are_unknown() -> None:
    body = {
        "status": "success",
        "warnings": ["partial response"],
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"tt_q": "power", "UUID": "GPU-1"}, "value": [1, "NaN"]},
                {"metric": {"tt_q": "power", "UUID": 7}, "value": [1, "300"]},
                {"metric": {"tt_q": "power", "UUID": "GPU-2"}, "value": [1, "+Inf"]},
                {"metric": {"tt_q": "power", "UUID": "GPU-3"}, "value": [1, "12.5"]},
                "junk",
            ],
        },
    }
    got = vector_answer(json.dumps(body).encode())
    assert [(s.labels["UUID"], s.value) for s in got.samples] == [("GPU-1", None), ("GPU-2", None), ("GPU-3", 12.5)]
    assert got.warnings == ("partial response",)


@pytest.mark.parametrize(
    ("instance", "host"), [("gpu-a:9400", "gpu-a"), ("[fe80::1]:9400", "fe80::1"), ("fe80::1", "fe80::1"), ("h", "h")]
)
def test_the_host_of_an_instance_is_it_without_its_port(instance: str, host: str) -> None:
    assert instance_host(instance) == host


def _busy(moved: str, samples: str) -> dict[str, list[tuple[dict[str, str], str]]]:
    """A window's ``changes``/``count_over_time`` parts for the chat pod's output counter."""
    name = "srv|vllm|out|vllm:generation_tokens_total"
    return {f"changes|{name}": [(server("chat"), moved)], f"count|{name}": [(server("chat"), samples)]}


def test_each_window_has_its_own_busy_share() -> None:
    """Busy in 6 of the cost window's 6 intervals but 1 of the rate window's 4: never the one
    window's share in the other."""
    out = "srv|vllm|out|vllm:generation_tokens_total"
    cost = answer({"power_avg": [(POD_1, "300")], out: [(server("chat"), "600")], **_busy("6", "7")})
    rate = answer({"power_avg": [(POD_1, "300")], out: [(server("chat"), "100")], **_busy("1", "5")})
    s = hosts(cost, rate, answer({}))[0]["gpu-s"].gpus[0]
    assert s.cost_window.busy_s == pytest.approx(COST_S) and s.rate_window.busy_s == pytest.approx(RATE_S / 4)


def test_dollars_an_hour_are_unknown_when_energy_is_charged_and_power_is_not_known() -> None:
    owned = CostConfig(energy_in_rate=False)
    names, _ = hosts(sliced(), sliced_rate(), answer({}), owned)
    assert names["gpu-s"].gpus[0].usd_per_hour_now is None
    latest = answer({"power": [(POD_1, "300")]})
    names, _ = hosts(sliced(), sliced_rate(), latest, owned)
    per_hour = names["gpu-s"].gpus[0].usd_per_hour_now
    price = names["gpu-s"].gpus[0].price
    assert price is not None and per_hour is not None
    assert per_hour == pytest.approx(price.usd_per_gpu_hour + energy_cost_usd(300.0 * 3600.0, owned))


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        ({"fb_used": "74215", "fb_free": "6811"}, (74215 << 20, 81026 << 20)),  # MiB, before 4.9.0
        ({"fb_used": str(74215 << 20), "fb_free": str(6811 << 20)}, (74215 << 20, 81026 << 20)),  # bytes
        ({"fb_used": "0", "fb_free": str(80 << 30)}, (0, 80 << 30)),  # an idle GPU, in bytes
        ({"fb_used": "74000", "fb_free": "6811", "fb_reserved": "215"}, (74215 << 20, 81026 << 20)),
        ({"fb_used": "74215"}, (None, None)),  # no total without the free part, no unit either
        ({"fb_used": "-1", "fb_free": "6811"}, (None, None)),
    ],
)
def test_memory_is_made_what_nvml_gives_in_bytes(memory: dict[str, str], expected: tuple[int | None, ...]) -> None:
    latest = answer({part: [(SLICED, value)] for part, value in memory.items()})
    names, _ = hosts(answer({}), answer({}), latest)
    sample = names["gpu-s"].gpus[0].sample
    assert (sample.memory_used_bytes, sample.memory_total_bytes) == expected


def test_latency_comes_from_the_first_histogram_a_server_has_and_alone_makes_no_server() -> None:
    chat, embed, ghost = server("chat"), server("embed"), server("ghost")
    cost = answer(
        {
            "energy|DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": [(POD_1, "1800000"), (POD_2, "1800000")],
            "srv|vllm|out|vllm:generation_tokens_total": [(chat, "600"), (embed, "300")],
            # the older name first in the answer: its rank, not the answer's order, decides
            "fig|vllm|itl_p50|1|vllm:time_per_output_token_seconds": [(chat, "0.035"), (embed, "0.035")],
            "fig|vllm|itl_p50|0|vllm:inter_token_latency_seconds": [(chat, "0.015"), (embed, "NaN")],
            "fig|vllm|ttft_p50|0|vllm:time_to_first_token_seconds": [(chat, "NaN"), (ghost, "0.2")],
            "fig|vllm|ttft_p95|0|vllm:time_to_first_token_seconds": [(chat, "0.375")],
        }
    )
    names, messages = hosts(cost, answer({}), answer({}))
    endpoints = {e.sample.name: e for e in names["gpu-s"].endpoints}  # none for the ghost's histogram alone
    assert set(endpoints) == {"ml/chat", "ml/embed"} and messages == []  # nor a server left unjoined
    assert endpoints["ml/chat"].itl_p50_s == 0.015
    # the newer histogram with no observation in the window: no figure, never the older one's
    assert endpoints["ml/embed"].itl_p50_s is None
    chat = endpoints["ml/chat"]
    assert chat.ttft_p50_s is None and chat.ttft_p95_s == 0.375  # no observation: no figure


def test_requests_and_kv_cache_come_from_the_first_name_a_server_has_and_only_when_plausible() -> None:
    chat, embed = server("chat"), server("embed")
    cost = answer(
        {
            "energy|DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": [(POD_1, "1800000"), (POD_2, "1800000")],
            "srv|vllm|out|vllm:generation_tokens_total": [(chat, "600"), (embed, "300")],
        }
    )
    latest = answer(
        {
            "fig|vllm|running|0|vllm:num_requests_running": [(chat, "3"), (embed, "12")],
            "fig|vllm|waiting|0|vllm:num_requests_waiting": [(chat, "0"), (embed, "-1")],
            "fig|vllm|kv|1|vllm:gpu_cache_usage_perc": [(chat, "0.9"), (embed, "0.5")],  # before 0.9.2
            "fig|vllm|kv|0|vllm:kv_cache_usage_perc": [(chat, "0.4"), (embed, "1.5")],
        }
    )
    names, _ = hosts(cost, answer({}), latest)
    endpoints = {e.sample.name: e.sample for e in names["gpu-s"].endpoints}
    chat_now, embed_now = endpoints["ml/chat"], endpoints["ml/embed"]
    assert (chat_now.running, chat_now.waiting, chat_now.kv_cache_fraction) == (3.0, 0.0, 0.4)
    # a negative queue and a KV fraction over 1 are no figures; the older KV name is not read instead
    assert (embed_now.running, embed_now.waiting, embed_now.kv_cache_fraction) == (12.0, None, None)
