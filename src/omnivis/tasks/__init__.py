"""Tasks: the registry of task prompts, location tokens, and parsing answers into structured results.

`TASKS` lists every task prompt; `build_prompt` turns a task and its input into the model's prompt, and
`post_process` turns the generated ids back into the task's structured answer.
"""

from omnivis.tasks.parsing import post_process
from omnivis.tasks.registry import TASKS, Task, build_prompt

__all__ = ["TASKS", "Task", "build_prompt", "post_process"]
