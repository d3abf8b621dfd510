"""TinyNet's config and torch modules. Plain torch: no transformers classes involved."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn


@dataclass
class TinyNetConfig:
    model_type = "tinynet"  # class attribute: zoo writes it into config.json

    vocab_size: int = 1000
    hidden_size: int = 64
    num_blocks: int = 2
    num_labels: int = 2

    @classmethod
    def from_dict(cls, data: dict) -> "TinyNetConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        return {"model_type": self.model_type, **asdict(self)}


class Block(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.up = nn.Linear(hidden, 4 * hidden)
        self.down = nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm(x))))


class TinyNetModel(nn.Module):
    base_model_prefix = "tinynet"

    def __init__(self, config: TinyNetConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(Block(config.hidden_size) for _ in range(config.num_blocks))
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class TinyNetForClassification(nn.Module):
    base_model_prefix = "tinynet"

    def __init__(self, config: TinyNetConfig) -> None:
        super().__init__()
        self.config = config
        self.tinynet = TinyNetModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.tinynet(input_ids).mean(dim=1))
