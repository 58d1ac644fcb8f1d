"""The artifact store: a content-addressed blob server, its client, the node cache, Triton layout.

Modules: `store` (on-disk store and the validation of names), `server` (aiohttp app over the
store), `client` (HTTP calls with bounded retries), `publish` (what the compression Job hands
to the store and to the operator), `cache` (the node-local cache an init container fills),
`triton` (config.pbtxt generation). The CLI glue lives in `*_cli.py` beside this package.
"""
