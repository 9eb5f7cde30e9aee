"""`flight`: the onboard command line.

    flight generate --prompt TEXT [--model PATH] [--max-tokens N] [--temperature T] [--top-k K]
                    [--top-p P] [--seed S] [--threads N] [--n-ctx N] [--chat] [--system TEXT]
                    [--json]

Errors are one line on stderr and a non-zero exit status, never a traceback: an operator on a
console (or a script on the ground) must be able to read what went wrong.
"""
from __future__ import annotations

import argparse
import json
import sys

from flight.link.cli_support import EXIT_FAILURE, OneLineParser


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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="flight", description="tokensat onboard software")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _add_generate(sub)
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
