"""The copy itself, free of any endpoint library: the endpoint Protocols, the plan, the
pipeline, the engine, verification and the rate limit."""
