"""The server-rendered pages (DESIGN §10, §11): one router per resource, like the JSON API.
Every page asks the one access policy (`domain.access`) through `api.pages.common`."""

from fastapi import APIRouter

from api.pages import (
    case,
    case_commands,
    committee,
    dashboard,
    family,
    family_staff,
    language,
    meetings,
    mywork,
    outcomes,
    plan,
    referral,
    reports,
    staff,
)

router = APIRouter(include_in_schema=False)
for _module in (referral, mywork, dashboard, case_commands, plan, meetings, case, reports, committee,
                staff, language, family, family_staff, outcomes):
    router.include_router(_module.router)
