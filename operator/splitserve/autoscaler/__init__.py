"""The built-in coordinated prefill/decode autoscaler.

Module map (pure unless marked I/O):
- `capacity`   — per-replica capacity profiles (JSON format, validation, capacity at a target)
- `snapshot`   — one Prometheus observation of both pools; missing series are None
- `predict`    — load prediction over the recent window (EWMA, latest, positive trend)
- `correction` — online correction of the modelled capacity from observed latency
- `history`    — the recent samples, recommendations and scale times the policy looks back on
- `policy`     — the planning function: snapshot + SLOs + profiles + state → both pools' replicas
- `prom`       — (I/O) Prometheus HTTP API client and the PromQL built from the metric names
- `profile`    — (I/O) `splitserve profile`: measures a profile against real worker processes
- `applier`    — (I/O) writes replicas through the SplitPool scale subresource, records status
"""
