"""The RULER tasks' `custom_dataset` and scoring hooks (lm-eval imports this file by its path)."""

from hunyuan_large.eval.ruler.lmeval import dataset, mean_score, process_results  # noqa: F401 (YAML hooks)


def niah_single_1(**metadata):
    """hunyuan_ruler_niah_single_1's documents."""
    return dataset("niah_single_1", **metadata)


def niah_single_2(**metadata):
    """hunyuan_ruler_niah_single_2's documents."""
    return dataset("niah_single_2", **metadata)


def niah_multikey_1(**metadata):
    """hunyuan_ruler_niah_multikey_1's documents."""
    return dataset("niah_multikey_1", **metadata)


def vt(**metadata):
    """hunyuan_ruler_vt's documents."""
    return dataset("vt", **metadata)


def cwe(**metadata):
    """hunyuan_ruler_cwe's documents."""
    return dataset("cwe", **metadata)


def fwe(**metadata):
    """hunyuan_ruler_fwe's documents."""
    return dataset("fwe", **metadata)
