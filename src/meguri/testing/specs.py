"""Spec texts for tests: the smallest valid ``meguri.yaml`` that later sections extend."""

MINIMAL_SPEC = """\
version: 1
project: churn
objective:
  problem: Customers leave.
  expected_outcome: Know who will.
  kpi: Churn rate.
requirements:
  functional:
    task: binary_classification
    target: churned
"""


def quick_spec_text(
    project: str = "quick",
    *,
    algorithms: tuple[str, ...] = ("linear",),
    folds: int = 2,
    scale_only: bool = False,
) -> str:
    """The bundled example spec (breast cancer) made quick to train: only ``algorithms``,
    ``folds``-fold CV and, with ``scale_only``, one standard-scaling step as the preparation."""
    from meguri.spec import render_example_spec

    text = render_example_spec(project).replace("  cv_folds: 5\n", f"  cv_folds: {folds}\n", 1)
    if scale_only:
        start, end = text.index("  prepare:"), text.index("  # Reproducible by row hash")
        text = text[:start] + "  prepare:\n    - scale: {method: standard}\n" + text[end:]
    start = text.index("  allowed_algorithms:")
    chosen = f"  allowed_algorithms: [{', '.join(algorithms)}]"
    return text[:start] + chosen + text[text.index("\n", start) :]
