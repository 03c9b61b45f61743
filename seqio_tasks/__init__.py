"""Importing this package registers every invscale SeqIO task (`invscale:<task>.<variant>`),
as a T5X run does with `--gin.MIXTURE_OR_TASK_MODULE="seqio_tasks"`: the prize tasks, and
your own tasks declared in the directories that the gin macro INVSCALE_TASK_DIRS or the
environment variable INVSCALE_TASK_DIRS name at import time (`register_task_dirs` adds
more later)."""

from seqio_tasks.tasks import (build_task, parse_task_name, register_all, register_task_dirs,
                               register_variant, task_name)

REGISTERED = register_all()

__all__ = ["REGISTERED", "build_task", "parse_task_name", "register_task_dirs",
           "register_variant", "task_name"]
