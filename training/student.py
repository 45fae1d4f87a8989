"""A smaller student encoder cut from a teacher: fewer transformer layers, the same vocabulary and width.

The student keeps the teacher's embeddings and every ``k``-th layer, spread evenly and always including the top
one (for 12 -> 6: layers 2, 4, ..., 12; for 12 -> 4: 3, 6, 9, 12), plus the teacher's task heads, which read the
top layer's output. It starts close to the teacher, so distillation only has to close the gap.
"""

from __future__ import annotations

import copy

from torch import nn
from transformers import BertConfig, BertModel

from training.model import MultiTaskModel, PrototypeHead


def kept_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Indices (0-based) of the teacher layers the student keeps: evenly spread, the top layer included."""
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"a student needs 1 to {teacher_layers} layers, not {student_layers}")
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def student_encoder(teacher: BertModel, student_layers: int) -> BertModel:
    """A BertModel with ``student_layers`` of the teacher's layers and the teacher's embeddings (copies)."""
    config_dict = teacher.config.to_dict()
    config_dict["num_hidden_layers"] = student_layers
    student = BertModel(BertConfig.from_dict(config_dict), add_pooling_layer=False)
    student.embeddings.load_state_dict(teacher.embeddings.state_dict())
    for target, source in enumerate(kept_layers(teacher.config.num_hidden_layers, student_layers)):
        student.encoder.layer[target].load_state_dict(teacher.encoder.layer[source].state_dict())
    return student


def _outputs(head: nn.Module) -> int:
    """How many labels a head scores (a linear head's outputs, a description head's labels)."""
    if isinstance(head, PrototypeHead):
        return int(head.item_index.shape[0])
    if isinstance(head, nn.Linear):
        return head.out_features
    raise TypeError(f"a student cannot copy a head of type {type(head).__name__}")


def student_model(teacher: MultiTaskModel, student_layers: int, *, dropout: float = 0.1) -> MultiTaskModel:
    """The student: a cut encoder and copies of the teacher's heads (description heads keep their layout)."""
    counts = {task: _outputs(head) for task, head in teacher.heads.items()}
    student = MultiTaskModel(
        student_encoder(teacher.encoder, student_layers), counts, dropout=dropout, layouts=teacher.layouts
    )
    student.heads.load_state_dict(copy.deepcopy(teacher.heads.state_dict()))
    return student
