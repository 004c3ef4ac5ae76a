"""Evaluation: benchmark accuracy (open VQA, multiple choice, yes/no), fidelity to a teacher,
and lm-eval tasks; one column per model."""
from ..io.pretrained import load_pretrained as load_for_eval
from ..io.tokenizer import load_tokenizer
from .fidelity import fidelity
from .items import EvalItem, Task
from .kinds import KINDS, OPTION_LETTER, SHORT_ANSWER, TaskKind, score
from .predict import predict
from .report import markdown, write_results
from .run import evaluate_models, lm_eval_models
from .tasks import load_task

__all__ = ["EvalItem", "KINDS", "OPTION_LETTER", "SHORT_ANSWER", "Task", "TaskKind", "evaluate_models",
           "fidelity", "lm_eval_models", "load_for_eval", "load_task", "load_tokenizer", "markdown", "predict",
           "score", "write_results"]
