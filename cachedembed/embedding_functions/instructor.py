"""Instructor models (hkunlp/instructor-base|large|xl) through sentence-transformers' native prompts.

The ``InstructorEmbedding`` package Chroma uses is broken on current sentence-transformers;
sentence-transformers (>= 2.4) loads Instructor checkpoints itself and prepends an
instruction with ``encode(..., prompt=...)``, excluded from pooling by the model's config.
Documents and queries get different instructions (Instructor's retrieval recipe), and the
instruction is part of the cache namespace, so changing it never returns stale vectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..keys import Role
from .sentence_transformer import SentenceTransformerEmbeddingFunction

DEFAULT_MODEL = "hkunlp/instructor-base"
DOCUMENT_INSTRUCTION = "Represent the document for retrieval: "
QUERY_INSTRUCTION = "Represent the question for retrieving supporting documents: "


class InstructorEmbeddingFunction(SentenceTransformerEmbeddingFunction):
    """An Instructor model run locally with an instruction per role.

    Args:
        model_name: ``hkunlp/instructor-base`` (768-d), ``-large``, ``-xl``, or a local path.
        device: ``cpu``, ``cuda``, ... (not part of the cache namespace).
        instruction: The instruction for documents, and for queries too unless
            ``query_instruction`` is given (Chroma's single ``instruction``). Default:
            ``"Represent the document for retrieval: "``.
        query_instruction: The instruction for queries. Default (when ``instruction`` is
            also unset): ``"Represent the question for retrieving supporting documents: "``.
    """

    provider = "instructor"
    spec_options: ClassVar[Mapping[str, type]] = {
        "device": str,
        "instruction": str,
        "query_instruction": str,
    }

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        device: str = "cpu",
        instruction: str | None = None,
        query_instruction: str | None = None,
    ) -> None:
        super().__init__(model_name=model_name, device=device)
        self.instruction = instruction
        self.query_instruction = query_instruction

    @classmethod
    def spec_help(cls) -> str:
        return "instructor:MODEL_NAME_OR_PATH  (e.g. hkunlp/instructor-base; local)"

    def instruction_for(self, role: Role) -> str:
        if role == "query":
            return self.query_instruction or self.instruction or QUERY_INSTRUCTION
        return self.instruction or DOCUMENT_INSTRUCTION

    def encode_kwargs(self, role: Role) -> dict[str, Any]:
        return {"prompt": self.instruction_for(role)}

    def get_config(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "device": self.device,
            "instruction": self.instruction,
            "query_instruction": self.query_instruction,
        }
