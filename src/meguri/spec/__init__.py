"""Phase 1, the business requirements as code: ``meguri.yaml``, its versions, and documents.

::

    from meguri.spec import load_spec

    spec = load_spec()                      # the nearest meguri.yaml, validated
    for criterion in spec.criteria_on("test"):
        print(criterion, criterion.check(0.97))

Errors are :class:`~meguri.errors.SpecError` with the file, line and column of each problem.
Storing versions needs a :class:`~meguri.store.metadata.MetadataStore`; importing this package
does not import the store (nor SQLAlchemy).
"""

from meguri.spec._criteria import CriterionOutcome, compare, evaluate, is_stricter, margin
from meguri.spec._load import (
    SPEC_FILE,
    ParsedYaml,
    SpecProblem,
    check_spec_text,
    find_spec_file,
    load_spec,
    parse_spec,
    parse_yaml,
    read_spec_text,
)
from meguri.spec._model import (
    ALGORITHMS,
    COMPARISONS,
    STAGES,
    TASKS,
    Comparison,
    ComputeBudget,
    Constraints,
    DataSource,
    DataSpec,
    DeployEnvironment,
    DeploySpec,
    FunctionalRequirements,
    Milestone,
    ModelSpec,
    MonitorSpec,
    NonFunctionalRequirements,
    Objective,
    PipelineSpec,
    ProjectSpec,
    Requirements,
    Resources,
    Schedule,
    Stage,
    SuccessCriterion,
    Task,
    TeamMember,
    duration_seconds,
)
from meguri.spec._template import render_example_spec, slugify
from meguri.spec._versions import (
    SpecChange,
    SpecDiff,
    canonical_json,
    diff_specs,
    normalise_document,
    resolve_spec_version,
    save_document,
    save_spec_file,
    save_spec_version,
    spec_hash,
    unified_diff,
)

__all__ = [
    "ALGORITHMS",
    "COMPARISONS",
    "SPEC_FILE",
    "STAGES",
    "TASKS",
    "Comparison",
    "ComputeBudget",
    "Constraints",
    "CriterionOutcome",
    "DataSource",
    "DataSpec",
    "DeployEnvironment",
    "DeploySpec",
    "FunctionalRequirements",
    "Milestone",
    "ModelSpec",
    "MonitorSpec",
    "NonFunctionalRequirements",
    "Objective",
    "ParsedYaml",
    "PipelineSpec",
    "ProjectSpec",
    "Requirements",
    "Resources",
    "Schedule",
    "SpecChange",
    "SpecDiff",
    "SpecProblem",
    "Stage",
    "SuccessCriterion",
    "Task",
    "TeamMember",
    "canonical_json",
    "check_spec_text",
    "compare",
    "diff_specs",
    "duration_seconds",
    "evaluate",
    "find_spec_file",
    "is_stricter",
    "load_spec",
    "margin",
    "normalise_document",
    "parse_spec",
    "parse_yaml",
    "read_spec_text",
    "render_example_spec",
    "resolve_spec_version",
    "save_document",
    "save_spec_file",
    "save_spec_version",
    "slugify",
    "spec_hash",
    "unified_diff",
]
