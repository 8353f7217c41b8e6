"""The server-rendered pages (DESIGN §10, §11): one router per resource, like the JSON API.
Every page asks the one access policy (`domain.access`) through `api.pages.common`."""

from fastapi import APIRouter

from api.pages import case, dashboard, language, reports

router = APIRouter(include_in_schema=False)
for _module in (dashboard, case, reports, language):
    router.include_router(_module.router)
