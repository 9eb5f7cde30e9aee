"""The space–ground link (see docs/ICD.md), flight side; ground/ builds on the same modules.

dictionary.json / dictionary   the ICD: packet kinds, channels, events, commands, enums
spacepacket, onboard_time, crc16, framing, sdls, codec   the wire format, layer by layer
keys                           the shared HMAC key file
serial_port                    devices and pyserial URLs, full duplex
service                        LinkService: what the executive registers handlers with and feeds
telemetry, event_reporter, tm_writer, result_downlink, sack   the service's parts
job_result                     a job's result as it goes down: zlib of a msgpack map
cli_support                    what the flight and ground command lines share
icd_markdown                   renders docs/ICD.md
"""
