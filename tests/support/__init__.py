"""What the tests share: servers, fault proxies, fixture databases, API helpers, counts."""
