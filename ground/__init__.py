"""Ground station: client library (client), archive, result reassembly and the `ground` CLI."""
