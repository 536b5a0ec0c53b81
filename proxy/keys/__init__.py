"""Virtual keys, rate limits, budgets, spend, the usage log and the response cache (CONTRACT §12).

Nothing here is imported by `import proxy.app`: the gateway builds a `Gate`
(proxy/keys/gate.py) only when keys, limits, a state section or the cache are
configured, and database/Redis drivers load on first use.
"""
