"""What `splitserve run` shows: a live table on a terminal, periodic log lines otherwise (pure)."""

from __future__ import annotations

from typing import Any


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.0f}ms" if v >= 10 else f"{v:.1f}ms"


def render(status: dict[str, Any], url: str, service: str, workers: dict[str, tuple[int, int]]
           ) -> list[str]:
    """Lines of the live view. `workers`: role -> (processes alive, processes started)."""
    lines = [f"splitserve run: {service}   router {url}   (Ctrl-C stops everything)", ""]
    lines.append(f"{'pool':<8} {'procs':>7} {'ready':>6} {'running':>8} {'waiting':>8} "
                 f"{'queued tok':>11} {'KV used':>14}")
    for role in ("prefill", "decode"):
        p = status["pools"][role]
        alive, started = workers.get(role, (0, 0))
        kv = f"{p['kv_blocks_used']}/{p['kv_blocks_total']}"
        lines.append(f"{role:<8} {f'{alive}/{started}':>7} {p['ready']:>6} {p['running']:>8} "
                     f"{p['waiting']:>8} {p['queued_prompt_tokens']:>11} {kv:>14}")
    t, o = status["ttft_ms"], status["tpot_ms"]
    lines += ["", f"router   in flight {status['inflight']}   queued {status['queued']}"
              f"{'   DRAINING' if status.get('draining') else ''}",
              f"latency  TTFT p50 {_ms(t['p50'])} p90 {_ms(t['p90'])}   "
              f"TPOT p50 {_ms(o['p50'])} p90 {_ms(o['p90'])}"]
    return lines


def log_line(status: dict[str, Any]) -> str:
    pools = status["pools"]
    t, o = status["ttft_ms"], status["tpot_ms"]
    return (f"prefill ready={pools['prefill']['ready']} queued_tokens="
            f"{pools['prefill']['queued_prompt_tokens']} decode ready={pools['decode']['ready']} "
            f"running={pools['decode']['running']} inflight={status['inflight']} "
            f"queued={status['queued']} ttft_p50={_ms(t['p50'])} tpot_p50={_ms(o['p50'])}")
