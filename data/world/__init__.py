"""The simulated world and its files.

What a world is (config, schema, declared), how it is simulated (simulation, truth, oracle,
best_page, features), and how it lives on disk (io, integrity, splits), with the id lookups
and the one sigmoid they share (ids, numeric). The commands that write and check a world are
`data.generate` and `data.verify`; `data.ingest` writes one from real logs.
"""
