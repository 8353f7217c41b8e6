"""Custom search attributes: process facts only, never names, diagnoses or notes."""

from temporalio.common import SearchAttributeKey

STAGE = SearchAttributeKey.for_keyword("OneFamilyStage")
COORDINATOR = SearchAttributeKey.for_keyword("OneFamilyCoordinator")
NEXT_DEADLINE = SearchAttributeKey.for_datetime("OneFamilyNextDeadline")
OVERDUE = SearchAttributeKey.for_bool("OneFamilyOverdue")
BLOCKED_ON = SearchAttributeKey.for_keyword("OneFamilyBlockedOn")

ALL = [STAGE, COORDINATOR, NEXT_DEADLINE, OVERDUE, BLOCKED_ON]

# name -> CLI type, for `temporal server start-dev --search-attribute NAME=TYPE`
CLI_TYPES = {
    STAGE.name: "Keyword",
    COORDINATOR.name: "Keyword",
    NEXT_DEADLINE.name: "Datetime",
    OVERDUE.name: "Bool",
    BLOCKED_ON.name: "Keyword",
}
