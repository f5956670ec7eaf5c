"""The shipped tasks' `custom_dataset` hooks (lm-eval imports this file by its path next to the YAMLs)."""

from hunyuan_large.eval.offline import dataset


def arithmetic(**metadata):
    """hunyuan_arithmetic's splits (lm-eval passes the task's metadata, unused here)."""
    return dataset("arithmetic")


def choice(**metadata):
    """hunyuan_choice's splits."""
    return dataset("choice")


def text(**metadata):
    """hunyuan_text's splits."""
    return dataset("text")
