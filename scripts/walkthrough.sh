#!/usr/bin/env bash
# One case from referral to closure with curl: the README's walk-through (tests run it verbatim).
set -euo pipefail
API=${API:-http://127.0.0.1:8000/api/v1}
ADMIN_PASSWORD=${ADMIN_PASSWORD:-$(cat "${ONEFAMILY_DATA_DIR:-.data}/admin-password")}
j() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
token() { curl -sf -X POST "$API/auth/tokens" -u "$1:$2" | j 'd["token"]'; }
post() { curl -sf -X "$1" "$API$2" -H "Authorization: Bearer $3" -H 'Content-Type: application/json' ${4:+-d "$4"}; }

# 1. The administrator signs in (a personal API token) and registers staff with their passwords.
ADMIN=$(token admin "$ADMIN_PASSWORD")
post POST /staff "$ADMIN" '{"id":"anna","name":"Anna Berg","discipline":"social_worker","department":"children_disability","roles":["coordinator"],"email":"anna@example.org","password":"anna-walkthrough-1"}' >/dev/null
post POST /staff "$ADMIN" '{"id":"ole","name":"Ole Dam","discipline":"adult_services","department":"adult_services","roles":["team_member"],"password":"ole-walkthrough-1"}' >/dev/null
post POST /staff "$ADMIN" '{"id":"mia","name":"Mia Lund","discipline":"manager","department":"children_disability","roles":["manager"],"password":"mia-walkthrough-1"}' >/dev/null
post POST /staff "$ADMIN" '{"id":"board","name":"Visitation committee","discipline":"other","department":"administration","roles":["committee"],"password":"board-walkthrough-1"}' >/dev/null
ANNA=$(token anna anna-walkthrough-1); OLE=$(token ole ole-walkthrough-1)
MIA=$(token mia mia-walkthrough-1); BOARD=$(token board board-walkthrough-1)

# 2. A referral arrives; the case starts with its deadlines (first contact, assessment).
CASE=$(curl -sf "$API/cases" -H "Authorization: Bearer $ANNA" -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: walkthrough-1' -d '{
  "referral": {"source": "school", "kind": "application", "received_at": "2026-11-20T09:00:00Z",
               "reason": "Needs coordinated support at home and school"},
  "family": {"name": "Family Jensen", "language": "da",
             "members": [{"name": "Emil", "role": "child", "birth_date": "2015-03-02", "diagnoses": ["ADHD"]},
                         {"name": "Mette", "role": "parent", "birth_date": "1985-01-10", "phone": "+4521111111"}]},
  "existing_contacts": [{"department": "adult_services", "caseworker": "Ole"}],
  "consent": {"coordinated_handling": true}, "contact_preference": "normal"}' | j 'd["id"]')
echo "case $CASE"

# 3. The manager assigns Anna; Anna forms the core team, calls the family, schedules the meeting.
post POST "/cases/$CASE/coordinator" "$MIA" '{"coordinator_id":"anna"}' | j 'd["stage"]'
post POST "/cases/$CASE/team" "$ANNA" '{"members":[{"staff_id":"ole","discipline":"adult_services","department":"adult_services"}]}' | j 'd["stage"]'
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ); SOON=$(date -u -d '+3 days' +%Y-%m-%dT10:00:00Z)
post POST "/cases/$CASE/contacts" "$ANNA" "{\"kind\":\"phone\",\"at\":\"$NOW\",\"notes\":\"Family wants school to work\"}" >/dev/null
post POST "/cases/$CASE/assessment/meeting" "$ANNA" "{\"at\":\"$SOON\",\"location\":\"Town hall\",\"participants\":[\"anna\",\"ole\",\"family\"]}" | j 'd["stage"]'

# 4. The ICS assessment, with the child's own views, is recorded and completed.
post PUT "/cases/$CASE/assessment" "$ANNA" '{"ics":{"child_development":[{"dimension":"health","strengths":"Sleeps well","concerns":"Stomach aches","family_view":"Worried"}]},"child_views":"Emil wants to go to school without stomach aches.","investigations":["child_investigation"]}' >/dev/null
post POST "/cases/$CASE/assessment/complete" "$ANNA" | j 'd["stage"]'

# 5. The joint plan: 12000/month funded by two departments exceeds the team's limit (10000).
post PUT "/cases/$CASE/plan" "$ANNA" '{"family_goals":["Emil goes to school every day"],"goals":[{"id":"g1","text":"Emil attends school 5 days a week by March","owner":"anna"}],"actions":[{"id":"a1","goal_id":"g1","text":"School adapts the timetable","owner":"school","due":"2027-01-15"}],"services":[{"name":"Family therapy","paragraph":"BL § 32","department":"children_disability","monthly_cost":12000,"funding":[{"department":"children_disability","share":0.5},{"department":"adult_services","share":0.5}]}]}' | j 'd["plan"]["version"]'
post POST "/cases/$CASE/plan/votes" "$ANNA" '{"staff_id":"anna","vote":"agree"}' >/dev/null
ITEM=$(post POST "/cases/$CASE/plan/votes" "$OLE" '{"staff_id":"ole","vote":"agree"}' | j 'd["escalations"][-1]["id"]')
echo "escalated as committee item $ITEM"

# 6. The committee approves; the family approves its plan: the case is active.
post POST "/committee/items/$ITEM/decision" "$BOARD" '{"decision":"approved","notes":"Joint funding agreed","funding":[{"department":"children_disability","share":0.6},{"department":"adult_services","share":0.4}]}' | j 'd["stage"]'
post POST "/cases/$CASE/plan/family-response" "$ANNA" '{"approved":true,"comment":"This is our plan"}' | j 'd["stage"]'

# 7. A status meeting, then the case closes with its reason.
post POST "/cases/$CASE/status-meetings" "$ANNA" "{\"at\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"participants\":[\"anna\",\"ole\",\"family\"],\"minutes\":\"School attendance up\",\"goal_progress\":[{\"goal_id\":\"g1\",\"status\":\"on_track\"}]}" | j 'len(d["status_meetings"])'
post POST "/cases/$CASE/close" "$ANNA" '{"reason":"goals_reached"}' | j 'd["stage"]'
curl -s "$API/cases/$CASE" -H "Authorization: Bearer $ANNA" | j '[(x["kind"], x["status"]) for x in d["deadlines"]]'
