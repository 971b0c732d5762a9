"""lm-evaluation-harness on the in-memory model variant (full tier).

The variant the run built (quantized, pruned) is wrapped by lm-eval's ``HFLM`` as it is, so the
harness scores exactly the model the other meters measured. Tasks come from YAML files in a local
directory (``TaskManager(include_path=...)``); their data must be local too, e.g.::

    task: my_choice
    dataset_path: json
    dataset_kwargs: {data_files: {test: /data/lm_eval/my_choice.jsonl}}
    test_split: test
    output_type: multiple_choice
    doc_to_text: "{{question}}"
    doc_to_choice: "{{choices}}"
    doc_to_target: "{{answer}}"
    metric_list: [{metric: acc}]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def evaluate_harness(model: Any, tokenizer: Any, *, tasks: list[str], task_dir: str | Path,
                     limit: int | None = None, batch_size: int = 4) -> dict[str, float]:
    """``{task: accuracy}`` (``acc`` of each task, ``acc_norm`` where ``acc`` is absent)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # task data is local; never reach for the Hub
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    directory = Path(task_dir).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"lm_eval_dir {directory} is not a directory of lm-eval task YAMLs")
    manager = TaskManager(include_path=str(directory))
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"lm-eval tasks {unknown} are not defined in {directory} nor built in")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    out = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit, log_samples=False,
                          bootstrap_iters=0)
    scores = {}
    for task in tasks:
        metrics = out["results"][task]
        key = next((k for k in ("acc,none", "acc_norm,none") if k in metrics), None)
        if key is None:
            raise ValueError(f"lm-eval task {task} reports no acc or acc_norm (got {sorted(metrics)})")
        scores[task] = float(metrics[key])
    return scores
