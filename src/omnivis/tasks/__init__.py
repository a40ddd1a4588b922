"""Tasks: the registry of task prompts, location tokens, parsing answers, and writing training targets.

`TASKS` lists every task prompt; `build_prompt` turns a task and its input into the model's prompt, and
`post_process` turns the generated ids back into the task's structured answer. `examples` (and `all_examples`
for a dataset pass) write a record's annotations as each task's training targets, the inverse of parsing.
"""

from omnivis.tasks.parsing import post_process
from omnivis.tasks.registry import TASKS, Task, build_prompt
from omnivis.tasks.targets import Example, TargetError, Unrepresentable, all_examples, examples

__all__ = [
    "TASKS",
    "Example",
    "TargetError",
    "Task",
    "Unrepresentable",
    "all_examples",
    "build_prompt",
    "examples",
    "post_process",
]
