"""The executive's side of weight scrubbing: what the engine process's scrubber reports becomes
events and housekeeping, and SCRUB_NOW and TEST_INJECT_SEU reach it.

The scrubber itself runs in the engine process (flight/engine/scrubber.py); the supervisor
counts its reports (EngineSupervisor.scrub) and hands each one here (on_scrub, on the
supervisor's thread). Detection and repair are split on purpose: the repair is the FDIR rule
WEIGHT_UPSET (SCRUB_UPSETS_PENDING > 0 -> SCRUB_REPAIR), one row of the rules table like every
other response, which the executive carries out with engine.repair(). A rule fires once per
episode, so an upset detected while that rule still holds (another block, found before the
first repair came back) is sent for repair from here: the action stays in force while its rule
holds.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

from flight.link.service import CommandFailure, CommandOrigin


class ScrubEngine(Protocol):
    scrub: Any  # ScrubCounters
    loaded: dict[str, Any] | None

    def scrub_now(self, timeout: float = ...) -> dict[str, Any]: ...

    def inject_seu(self, offset: int | None = ..., bit: int | None = ..., timeout: float = ...) -> dict[str, Any]: ...

    def repair(self) -> None: ...


class WeightScrub:
    def __init__(self, engine: ScrubEngine, emit_event: Callable[..., object],
                 repairing: Callable[[], bool]):
        """repairing(): an FDIR rule whose action is SCRUB_REPAIR holds now."""
        self._engine = engine
        self._emit = emit_event
        self._repairing = repairing

    def handlers(self) -> dict[str, Callable[[dict[str, Any], CommandOrigin], dict[str, Any] | None]]:
        return {"SCRUB_NOW": self._scrub_now, "TEST_INJECT_SEU": self._inject}

    def on_scrub(self, kind: str, fields: dict[str, Any]) -> None:
        """The supervisor's on_scrub: one report of the engine's scrubber."""
        if kind == "upset":
            self._emit("SCRUB_UPSET_DETECTED", block=fields["block"], offset=fields["offset"])
            if self._repairing():
                self._engine.repair()
        elif kind == "repaired":
            self._emit("SCRUB_UPSET_REPAIRED", block=fields["block"], offset=fields["offset"],
                       pending_ms=min(int(fields["pending_s"] * 1000), 0xFFFFFFFF))
        elif kind == "flash_corrupt":
            self._emit("SCRUB_FLASH_CORRUPT", block=fields["block"], offset=fields["offset"])

    def channels(self) -> dict[str, Any]:
        sc = self._engine.scrub
        scrub = (self._engine.loaded or {}).get("scrub") or {}
        period = scrub.get("period_s") or 0.0
        return {"SCRUB_PASSES": sc.passes, "SCRUB_UPSETS_DETECTED": sc.detected,
                "SCRUB_UPSETS_REPAIRED": sc.repaired, "SCRUB_UPSETS_PENDING": len(sc.pending),
                "SCRUB_FLASH_CORRUPT": sc.flash_corrupt, "SCRUB_LAST_PASS_S": sc.last_pass_s,
                "SCRUB_CPU_SHARE": sc.last_pass_cpu_s / period if period else 0.0}

    def _scrub_now(self, args: dict[str, Any], origin: CommandOrigin) -> dict[str, Any]:
        try:
            done = self._engine.scrub_now()
        except Exception as exc:  # EngineError: no manifest, not serving, no answer
            raise CommandFailure("ENGINE_UNAVAILABLE", str(exc)) from None
        bad = done["bad"]
        self._emit("SCRUB_PASS_COMMANDED", blocks=done["blocks"], bad=len(bad))
        return {"blocks": done["blocks"], "bad": bad[:64], "ms": round(done["seconds"] * 1000, 3)}

    def _inject(self, args: dict[str, Any], origin: CommandOrigin) -> dict[str, Any]:
        offset, bit = (None, None) if args.get("random") else (args.get("offset", 0), args.get("bit", 0))
        size = ((self._engine.loaded or {}).get("scrub") or {}).get("size")
        if offset is not None and size is not None and offset >= size:
            raise CommandFailure("BAD_ARGUMENT", f"offset {offset} is beyond the model's {size} octets")
        try:
            flipped = self._engine.inject_seu(offset, bit)
        except Exception as exc:
            raise CommandFailure("ENGINE_UNAVAILABLE", str(exc)) from None
        out = {"offset": flipped["offset"], "bit": flipped["bit"], "block": flipped["block"]}
        self._emit("TEST_SEU_INJECTED", **out)
        return out
