"""The HTTP surface: routes, the request/response contract, error mapping."""
