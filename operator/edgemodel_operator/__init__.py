"""The EdgeModel operator: API types, pure decisions, manifest builders, handlers, API client."""
