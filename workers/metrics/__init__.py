"""Dataset-quality metrics as pure functions: arrays and parameters in, a MetricResult out.

Definitions and worked examples follow ``shared/reference/metrics.md``; ``docs/metrics.md`` says
what each means. Nothing here touches the catalog, the queue or the network, so every metric can
be run and tested on plain numpy arrays.
"""
