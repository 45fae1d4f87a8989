"""The HTTP API: routes, schemas, dependencies, errors, metrics."""
