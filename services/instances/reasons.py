"""Why an instance is in its status: every reason the gateway records, and the sentence each one shows.

A status change keeps two things: a reason from this module and the raw detail (what tofu-controller's
condition or Semaphore said, or the gateway's own account with ids in it). The detail can name Proxmox
nodes, `root@pam`, storage, template ids and module sources, so the API shows it only to readers with
`instance:read:internals`; everyone else reads `sentence(reason)`, a fixed text this table owns.

Reasons tofu-controller writes are peer text too. `provisioning_reason`, `failure_reason` and
`ready_reason` keep the ones listed here (its `api/v1alpha2` constants) and replace any other by the
gateway's generic one for that phase; `public_reason` does the same on reading, for rows written before.
Standard library only: the rules here are pure and move with the domain.
"""

from __future__ import annotations

from typing import Final

# -- reasons the gateway writes itself -----------------------------------------------------------------
DELETE_REQUESTED: Final = "DeleteRequested"
RETRY_REQUESTED: Final = "RetryRequested"
TERRAFORM_OBJECT_REJECTED: Final = "TerraformObjectRejected"
TERRAFORM_OBJECT_DELETED: Final = "TerraformObjectDeleted"
TERRAFORM_DESTROYED: Final = "TerraformDestroyed"
TERRAFORM_OUTPUTS_INVALID: Final = "TerraformOutputsInvalid"  # the Secret does not decode to string outputs
# The outputs decode but their address or hostname is not one to hand to Ansible. A retry provisions again.
INVALID_OUTPUTS: Final = "InvalidOutputs"
TERRAFORM_FAILED: Final = "TerraformFailed"  # a Ready=False condition whose reason is not in this table
CONFIGURATION_SUCCEEDED: Final = "ConfigurationSucceeded"
CONFIGURATION_FAILED: Final = "ConfigurationFailed"
CONFIGURATION_TIMEOUT: Final = "ConfigurationTimeout"
CONFIGURATION_REJECTED: Final = "ConfigurationRejected"
UNRECOGNIZED: Final = "Unrecognized"  # read back: a stored reason this table does not know

# -- Ready condition reasons tofu-controller writes (flux-iac/tofu-controller api/v1alpha2) --------------
PROGRESSING: Final = "Progressing"
PLANNED_WITH_CHANGES: Final = "TerraformPlannedWithChanges"
APPLIED_SUCCEED: Final = "TerraformAppliedSucceed"
OUTPUTS_WRITTEN: Final = "TerraformOutputsWritten"
PLANNED_NO_CHANGES: Final = "TerraformPlannedNoChanges"
NO_DRIFT: Final = "NoDrift"
FORCE_UNLOCK: Final = "ForceUnlock"
ACCESS_DENIED: Final = "AccessDenied"
ARTIFACT_FAILED: Final = "ArtifactFailed"
RETRY_LIMIT_REACHED: Final = "RetryLimitReached"
DEPENDENCY_NOT_READY: Final = "DependencyNotReady"
DRIFT_DETECTED: Final = "DriftDetected"
DRIFT_DETECTION_FAILED: Final = "DriftDetectionFailed"
HEALTH_CHECKS_FAILED: Final = "HealthChecksFailed"
OUTPUTS_WRITING_FAILED: Final = "OutputsWritingFailed"
POST_PLANNING_WEBHOOK_FAILED: Final = "PostPlanningWebhookFailed"
APPLY_FAILED: Final = "TFExecApplyFailed"
INIT_FAILED: Final = "TFExecInitFailed"
LOCK_HELD: Final = "LockHeld"
NEW_FAILED: Final = "TFExecNewFailed"
OUTPUT_FAILED: Final = "TFExecOutputFailed"
PLAN_FAILED: Final = "TFExecPlanFailed"
TEMPLATE_GENERATION_FAILED: Final = "TemplateGenerationFailed"
VARS_GENERATION_FAILED: Final = "VarsGenerationFailed"
WORKSPACE_SELECT_FAILED: Final = "SelectWorkspaceFailed"

# -- day-2 actions (start, stop, reboot, resize): the task's start and its end ---------------------------
START_REQUESTED: Final = "StartRequested"
STOP_REQUESTED: Final = "StopRequested"
REBOOT_REQUESTED: Final = "RebootRequested"
RESIZE_REQUESTED: Final = "ResizeRequested"
ACTION_SUCCEEDED: Final = "ActionSucceeded"
ACTION_FAILED: Final = "ActionFailed"
ACTION_TIMEOUT: Final = "ActionTimeout"

ACTION_SENTENCES: Final[dict[str, str]] = {
    START_REQUESTED: "A start was requested; the virtual machine is being started.",
    STOP_REQUESTED: "A stop was requested; the virtual machine is being stopped.",
    REBOOT_REQUESTED: "A reboot was requested; the virtual machine is being rebooted.",
    RESIZE_REQUESTED: "A resize was requested; the virtual machine is being resized.",
    ACTION_SUCCEEDED: "The requested action finished.",
    ACTION_FAILED: "The requested action failed; the instance stays active.",
    ACTION_TIMEOUT: "The requested action did not finish in time; the instance stays active.",
}

CONFIGURATION_REASONS: Final = frozenset(
    {CONFIGURATION_FAILED, CONFIGURATION_TIMEOUT, CONFIGURATION_REJECTED}
)

_PROVISIONING_FAILED = "Provisioning the virtual machine failed."
_IN_PROGRESS = "The virtual machine is being provisioned."
_PROVISIONED = "The virtual machine is provisioned; it is being configured."

SENTENCES: Final[dict[str, str]] = {
    DELETE_REQUESTED: "Deletion was requested; the virtual machine is being destroyed.",
    RETRY_REQUESTED: "A retry was requested.",
    TERRAFORM_OBJECT_REJECTED: "The platform refused to provision the virtual machine.",
    TERRAFORM_OBJECT_DELETED: "The virtual machine was removed outside the platform's control.",
    TERRAFORM_DESTROYED: "The virtual machine was destroyed.",
    TERRAFORM_OUTPUTS_INVALID: "The virtual machine was created but did not report valid network details.",
    INVALID_OUTPUTS: "The virtual machine reported a network address or host name that is not allowed.",
    TERRAFORM_FAILED: _PROVISIONING_FAILED,
    CONFIGURATION_SUCCEEDED: "The virtual machine is configured and ready.",
    CONFIGURATION_FAILED: "Configuring the virtual machine failed.",
    CONFIGURATION_TIMEOUT: "Configuring the virtual machine did not finish in time.",
    CONFIGURATION_REJECTED: "The configuration service refused to configure the virtual machine.",
    UNRECOGNIZED: "The instance's status changed.",
    PROGRESSING: _IN_PROGRESS,
    PLANNED_WITH_CHANGES: _IN_PROGRESS,
    APPLIED_SUCCEED: _IN_PROGRESS,
    FORCE_UNLOCK: _IN_PROGRESS,
    OUTPUTS_WRITTEN: _PROVISIONED,
    PLANNED_NO_CHANGES: _PROVISIONED,
    NO_DRIFT: _PROVISIONED,
    ACCESS_DENIED: _PROVISIONING_FAILED,
    ARTIFACT_FAILED: "The virtual machine's template could not be fetched.",
    RETRY_LIMIT_REACHED: "Provisioning the virtual machine failed too many times.",
    DEPENDENCY_NOT_READY: "Provisioning waits for a platform dependency that is not ready.",
    DRIFT_DETECTED: "The virtual machine no longer matches its definition.",
    DRIFT_DETECTION_FAILED: _PROVISIONING_FAILED,
    HEALTH_CHECKS_FAILED: "The virtual machine failed its health checks.",
    OUTPUTS_WRITING_FAILED: "The virtual machine's network details could not be recorded.",
    POST_PLANNING_WEBHOOK_FAILED: _PROVISIONING_FAILED,
    APPLY_FAILED: _PROVISIONING_FAILED,
    INIT_FAILED: _PROVISIONING_FAILED,
    LOCK_HELD: "Provisioning waits for another change to the virtual machine to finish.",
    NEW_FAILED: _PROVISIONING_FAILED,
    OUTPUT_FAILED: "The virtual machine's network details could not be read.",
    PLAN_FAILED: "Planning the virtual machine failed.",
    TEMPLATE_GENERATION_FAILED: _PROVISIONING_FAILED,
    VARS_GENERATION_FAILED: "The virtual machine's settings could not be prepared.",
    WORKSPACE_SELECT_FAILED: _PROVISIONING_FAILED,
    **ACTION_SENTENCES,
}

KNOWN: Final = frozenset(SENTENCES)
# What tofu-controller may say in each phase; a reason out of its phase (a stale failure while the
# object is provisioning again) is replaced like an unknown one, so the sentence matches the status.
PROVISIONING_REASONS: Final = frozenset(
    {PROGRESSING, PLANNED_WITH_CHANGES, APPLIED_SUCCEED, FORCE_UNLOCK, LOCK_HELD}
)
READY_REASONS: Final = frozenset({OUTPUTS_WRITTEN, PLANNED_NO_CHANGES, NO_DRIFT})
FAILURE_REASONS: Final = frozenset(
    {
        ACCESS_DENIED,
        ARTIFACT_FAILED,
        RETRY_LIMIT_REACHED,
        DEPENDENCY_NOT_READY,
        DRIFT_DETECTED,
        DRIFT_DETECTION_FAILED,
        HEALTH_CHECKS_FAILED,
        OUTPUTS_WRITING_FAILED,
        POST_PLANNING_WEBHOOK_FAILED,
        APPLY_FAILED,
        INIT_FAILED,
        LOCK_HELD,
        NEW_FAILED,
        OUTPUT_FAILED,
        PLAN_FAILED,
        TEMPLATE_GENERATION_FAILED,
        VARS_GENERATION_FAILED,
        WORKSPACE_SELECT_FAILED,
    }
)


def sentence(reason: str | None) -> str | None:
    """The fixed, human sentence for a reason: what any reader of the instance may see. None says
    nothing happened that needs one (an instance just ordered)."""
    if reason is None:
        return None
    return SENTENCES.get(reason, SENTENCES[UNRECOGNIZED])


def public_reason(reason: str | None) -> str | None:
    """A stored reason as readers see it: a reason of this table, else `UNRECOGNIZED`."""
    if reason is None:
        return None
    return reason if reason in KNOWN else UNRECOGNIZED


def _known_or(reason: object, accepted: frozenset[str], fallback: str) -> tuple[str, str | None]:
    """(the reason to record, the peer's reason when it had to be replaced: the detail keeps it)."""
    if isinstance(reason, str) and reason in accepted:
        return reason, None
    return fallback, str(reason) if reason else None


def provisioning_reason(reason: object) -> tuple[str, str | None]:
    """A Ready=Unknown (or stale) condition's reason, as recorded for PROVISIONING."""
    return _known_or(reason, PROVISIONING_REASONS, PROGRESSING)


def failure_reason(reason: object) -> tuple[str, str | None]:
    """A Ready=False condition's reason, as recorded for FAILED."""
    return _known_or(reason, FAILURE_REASONS, TERRAFORM_FAILED)


def ready_reason(reason: object) -> tuple[str, str | None]:
    """A Ready=True condition's reason, as recorded for CONFIGURING (the outputs were read by then)."""
    return _known_or(reason, READY_REASONS, OUTPUTS_WRITTEN)


def detail(message: object, replaced_reason: str | None = None) -> str | None:
    """The raw detail to keep: the peer's message, prefixed by its own reason when that was replaced."""
    text = message if isinstance(message, str) and message else None
    if replaced_reason is None:
        return text
    return f"{replaced_reason}: {text}" if text else replaced_reason
