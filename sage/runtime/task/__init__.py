"""Tasks: base_task.py (the loop), local_task.py (a task as a thread or a process)."""
