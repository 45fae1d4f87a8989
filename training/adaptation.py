"""Sequential adaptation: masked-language-model training on unlabelled report text before the target tasks."""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm
from transformers import BertForMaskedLM, BertModel

from app.errors import ConfigurationError
from app.inference.tensors import pad_batch
from training.model import encode_texts, pad_token_id

if TYPE_CHECKING:
    from training.config import TrainConfig

logger = logging.getLogger(__name__)
MASK_SHARE = 0.15


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    special_ids: set[int],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's recipe: 15% of the real tokens are targets; of those 80% become <mask>, 10% a random token, 10% stay."""
    labels = input_ids.clone()
    candidates = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(sorted(special_ids)))
    chosen = (torch.rand(input_ids.shape, generator=generator) < MASK_SHARE) & candidates
    labels[~chosen] = -100
    masked = input_ids.clone()
    roll = torch.rand(input_ids.shape, generator=generator)
    masked[chosen & (roll < 0.8)] = mask_id
    random_tokens = torch.randint(vocab_size, input_ids.shape, generator=generator)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[swap] = random_tokens[swap]
    return masked, labels


def adapt_with_masked_lm(encoder: BertModel, tokenizer: Tokenizer, texts: list[str], config: TrainConfig) -> None:
    """Continue pretraining ``encoder`` in place with masked-LM on ``texts`` for ``config.mlm_epochs`` epochs.
    The prediction head is new (the e5 checkpoint has none) and is thrown away afterwards."""
    mask_id = tokenizer.token_to_id("<mask>")
    pad_id = pad_token_id(tokenizer)
    if mask_id is None:
        raise ConfigurationError("masked-LM adaptation (mlm_epochs) needs a tokenizer with a <mask> token")
    special_ids = {
        i for i in (tokenizer.token_to_id(t) for t in ("<s>", "</s>", "<pad>", "<unk>", "<mask>")) if i is not None
    }
    mlm = BertForMaskedLM(encoder.config)
    mlm.bert.load_state_dict(encoder.state_dict(), strict=False)
    mlm.tie_weights()
    encoded = encode_texts(tokenizer, texts, config.max_length, text_prefix=config.text_prefix)
    optimizer = torch.optim.AdamW(mlm.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    rng = random.Random(config.seed)
    mlm.train()
    for epoch in range(config.mlm_epochs):
        order = list(range(len(encoded.input_ids)))
        rng.shuffle(order)
        batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        total = 0.0
        for indices in tqdm(batches, desc=f"masked-LM {epoch + 1}/{config.mlm_epochs}", leave=False):
            ids, mask = (torch.from_numpy(a) for a in pad_batch([encoded.input_ids[i] for i in indices], pad_id))
            inputs, labels = mask_tokens(ids, mask, mask_id, encoder.config.vocab_size, special_ids, generator)
            if not (labels != -100).any():
                continue
            loss = mlm(input_ids=inputs, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            total += loss.item()
        logger.info("masked-LM epoch %d: loss %.4f", epoch + 1, total / max(1, len(batches)))
    encoder.load_state_dict(mlm.bert.state_dict(), strict=False)
