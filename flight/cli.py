"""`flight`: the onboard command line.

    flight run --port DEV|URL --keys FILE --data-dir DIR [--baud N] [--config FILE] [--model PATH]
               [--threads N] [--sensors sim|hil|jetson] [--sensor-port DEV|URL] [--sysfs-root DIR]
               [--log-level L]
    flight manifest [MODEL] [--block-octets N] [--check]
    flight generate --prompt TEXT [--model PATH] [--max-tokens N] [--temperature T] [--top-k K]
                    [--top-p P] [--seed S] [--threads N] [--n-ctx N] [--chat] [--system TEXT]
                    [--json]

Errors are one line on stderr and a non-zero exit status, never a traceback: an operator on a
console (or a script on the ground) must be able to read what went wrong.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from flight.link.cli_support import EXIT_FAILURE, EXIT_USAGE, OneLineParser, baud_rate, configure_logging, log_level

STOP_TIMEOUT_S = 5.0  # SIGTERM to exit, the bound
WATCHDOG_PERIOD_S = 1.0


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text with the onboard LLM engine")
    p.add_argument("--prompt", required=True, help="text to complete (or the user turn with --chat)")
    p.add_argument("--model", help="llama GGUF file (default: packaged SmolLM2-135M-Instruct Q4_1)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 means greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 means off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 means off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n-ctx", type=int, default=2048, help="context length (KV cache) to allocate")
    p.add_argument("--simd", default="auto", help="auto, avx2, neon or scalar")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--system", default=None, help="system message with --chat")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    p.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    from flight.engine import Engine

    if args.max_tokens < 1:
        raise ValueError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    engine = Engine.load(args.model, threads=args.threads, n_ctx=args.n_ctx, simd=args.simd)
    with engine:
        prompt = engine.chat_prompt(args.prompt, args.system) if args.chat else args.prompt
        stream = None if args.json else (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
        g = engine.generate(prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p, seed=args.seed, on_text=stream)
        if args.json:
            print(json.dumps({
                "prompt": prompt,
                "prompt_tokens": g.prompt_tokens,
                "tokens": g.tokens,
                "text": g.text,
                "stop_reason": g.stop_reason,
                "prefill_tok_s": round(g.prefill_tok_s, 2),
                "decode_tok_s": round(g.decode_tok_s, 2),
                "time_to_first_token_s": round(g.first_token_s, 6),
                "threads": engine.threads,
                "simd": engine.simd,
                "resident_bytes": engine.resident_bytes,
            }, ensure_ascii=False))
        else:
            sys.stdout.write("\n")
            print(f"[{len(g.prompt_tokens)} prompt tokens at {g.prefill_tok_s:.1f} tok/s, "
                  f"{len(g.tokens)} generated at {g.decode_tok_s:.1f} tok/s, "
                  f"first token {g.first_token_s * 1e3:.1f} ms, stop: {g.stop_reason}, "
                  f"{engine.threads} threads {engine.simd}]", file=sys.stderr)
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the node: link, executive, engine and sensors, until SIGTERM or SIGINT")
    p.add_argument("--port", required=True, help="serial device or pyserial URL of the radio")
    p.add_argument("--keys", required=True, action="append", metavar="FILE",
                   help="key file (mode 0600); give it again for more, e.g. the offline recovery key file")
    p.add_argument("--data-dir", required=True, help="directory of the onboard database (must exist)")
    p.add_argument("--baud", type=baud_rate, help="line rate (default: config, else 115200)")
    p.add_argument("--config", help="TOML configuration (flight/node.example.toml lists every key)")
    p.add_argument("--model", help="llama GGUF file (default: config, else the packaged SmolLM2-135M Q4_1)")
    p.add_argument("--threads", type=int, help="engine threads (default: config, else cores - 1)")
    p.add_argument("--sensors", choices=("sim", "hil", "jetson"), help="sensor backend (default: config, else sim)")
    p.add_argument("--sensor-port", help="serial device or URL of the sensor bus: the rig's (hil) or the EPS board's "
                                         "(jetson)")
    p.add_argument("--sysfs-root", help="jetson: directory holding the board's sys/ and nvpmodel files (default: config, "
                                        "else /)")
    p.add_argument("--log-level", type=log_level, default="INFO", help="debug, info, warning, error or critical")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from flight.config import ConfigError, load_config
    from flight.node import Node, NodeStartError

    prog = "flight run"
    configure_logging(args.log_level)
    overrides: dict[str, dict[str, object]] = {"link": {"port": args.port}}
    for section, key, value in (("link", "baud", args.baud), ("engine", "model", args.model),
                                ("engine", "threads", args.threads), ("sensors", "backend", args.sensors),
                                ("sensors", "port", args.sensor_port), ("sensors", "sysfs_root", args.sysfs_root)):
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    notify = _SystemdNotifier()
    try:
        node = Node(config, args.keys, args.data_dir, on_tick=notify.watchdog)
        node.start()
    except NodeStartError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    notify.send("READY=1")
    logging.getLogger("flight.node").info("node running: port %s, data %s", args.port, args.data_dir)
    stop.wait()
    notify.send("STOPPING=1")
    # A stop that hangs (a wedged port, a disk gone) must not keep the process: the bound is hard.
    deadline = threading.Timer(STOP_TIMEOUT_S, lambda: os._exit(EXIT_FAILURE))
    deadline.daemon = True
    deadline.start()
    node.stop()
    return 0


class _SystemdNotifier:
    """sd_notify READY/WATCHDOG/STOPPING when NOTIFY_SOCKET is set (systemd Type=notify with
    WatchdogSec=); nothing otherwise. The watchdog is fed from the main loop's tick, so a wedged
    loop stops feeding it and systemd restarts the node."""

    def __init__(self) -> None:
        self._notifier = None
        self._last = 0.0
        if os.environ.get("NOTIFY_SOCKET"):
            import sdnotify

            self._notifier = sdnotify.SystemdNotifier()

    def send(self, state: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(state)

    def watchdog(self) -> None:
        now = time.monotonic()
        if self._notifier is not None and now - self._last >= WATCHDOG_PERIOD_S:
            self._last = now
            self._notifier.notify("WATCHDOG=1")


def _add_manifest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("manifest", help="make (when installing a model) or check the weight manifest beside a model")
    p.add_argument("model", nargs="?", help="GGUF file (default: the packaged SmolLM2-135M-Instruct Q4_1)")
    p.add_argument("--block-octets", type=int, default=None, help="octets per checksummed block (default 65536)")
    p.add_argument("--check", action="store_true", help="verify the model against its manifest instead of making one")
    p.set_defaults(func=_manifest)


def _manifest(args: argparse.Namespace) -> int:
    from flight.engine.manifest import DEFAULT_BLOCK_OCTETS, ManifestError, check_model, make_manifest, manifest_path
    from flight.engine.model_path import default_model_path

    model = args.model or str(default_model_path())
    try:
        if args.check:
            m = check_model(model)
            print(f"{model}: {m.n_blocks} blocks agree with {manifest_path(model).name}")
        else:
            m = make_manifest(model, args.block_octets or DEFAULT_BLOCK_OCTETS)
            print(f"{manifest_path(model)}: {m.n_blocks} blocks of {m.block_octets} octets")
    except ManifestError as exc:
        print(f"flight manifest: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="flight", description="tokensat onboard software")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _add_generate(sub)
    _add_manifest(sub)
    _add_run(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # EngineError is a ValueError
        print(f"flight: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("flight: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
