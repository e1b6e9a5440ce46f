"""The paper's 20 Python next-token tasks, custom tasks, splits and the task loss."""
