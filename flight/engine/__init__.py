"""The onboard LLM engine: C (csrc/) through Cython, with tokenizer and chat template."""
from flight.engine._engine import EngineError
from flight.engine.engine import BatchDecoder, BatchEvent, Engine, Generation
from flight.engine.model_path import ModelNotFound, default_model_path

__all__ = ["BatchDecoder", "BatchEvent", "Engine", "EngineError", "Generation", "ModelNotFound",
           "default_model_path"]
