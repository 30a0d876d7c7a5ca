"""OpenAPI 3.0 description of /api/v1, served at /api/v1/openapi.json."""
from __future__ import annotations

from ..timeutil import DEFAULT_TIMEZONE


def _err(desc: str) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(desc: str, ref: str) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


LOCK_ID = {"name": "lock_id", "in": "path", "required": True,
           "schema": {"type": "string", "pattern": "^[0-9a-f]{12}$"}, "description": "canonical MAC, 12 hex digits"}
CODE_ID = {"name": "code_id", "in": "path", "required": True, "schema": {"type": "integer"}}
AUTH = [{"bearer": []}]
CLOCK = {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$", "example": "15:00",
         "description": "wall-clock time at the property (its time zone), 24-hour HH:MM"}
COMMON = {"401": _err("missing or invalid token"), "404": _err("no such lock/code in your agency")}


def spec() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "KeyDrop agency API", "version": "1.0.0",
                 "description": "Locks, codes and history of one agency. Every id outside the caller's agency "
                                "answers 404. Times are ISO 8601 with offset; responses use UTC (Z)."},
        "servers": [{"url": "/api/v1"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "basic": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "Error": {"type": "object", "required": ["message"],
                          "properties": {"message": {"type": "string"}, "lock_id": {"type": "string"}}},
                "Token": {"type": "object", "properties": {"token": {"type": "string"}}},
                "Lock": {"type": "object", "properties": {
                    "id": {"type": "string"}, "mac": {"type": "string"}, "name": {"type": "string"},
                    "address": {"type": "string"}, "timezone": {"type": "string"},
                    "checkin_time": CLOCK, "checkout_time": CLOCK,
                    "status": {"type": "string", "enum": ["registered", "active"]},
                    "registered_at": {"type": "string", "format": "date-time"},
                    "activated_at": {"type": "string", "format": "date-time", "nullable": True},
                    "last_seen_at": {"type": "string", "format": "date-time", "nullable": True},
                    "firmware_version": {"type": "string", "nullable": True},
                    "desired_revision": {"type": "integer"}, "acked_revision": {"type": "integer"},
                    "online": {"type": "boolean", "nullable": True,
                               "description": "the MQTT bridge's view: true after a verified hello, false after "
                                              "the lock's signed last will; null if the bridge never saw the lock"},
                    "online_changed_at": {"type": "string", "format": "date-time", "nullable": True,
                                          "description": "when `online` last changed; null with it"},
                    "firmware": {"type": "object", "description": "over-the-air update state (docs/ota.md)",
                                 "properties": {
                                     "target": {"type": "string", "nullable": True},
                                     "state": {"type": "string", "enum": ["idle", "announced", "downloading",
                                                                          "staged", "updated", "refused",
                                                                          "rolled_back", "halted"]},
                                     "progress": {"type": "number", "nullable": True, "minimum": 0, "maximum": 1},
                                     "last_error": {"type": "string", "nullable": True},
                                     "rollbacks": {"type": "integer"},
                                     "rollout_halted": {"type": "boolean"}}},
                    "health": {"type": "object", "nullable": True,
                               "description": "the figures of the lock's last hello (docs/protocol.md); each may "
                                              "be missing; null before the first",
                               "properties": {
                                   "reset": {"type": "string", "enum": ["power_on", "watchdog", "software", "hard",
                                                                        "deep_sleep", "other"]},
                                   "uptime": {"type": "integer", "description": "seconds since boot"},
                                   "heap_free": {"type": "integer", "description": "bytes"},
                                   "heap_block": {"type": "integer",
                                                  "description": "largest free heap block at boot, bytes"},
                                   "rssi": {"type": "integer", "description": "Wi-Fi signal, dBm"},
                                   "flash_writes": {"type": "integer", "description": "files written since boot"},
                                   "at": {"type": "string", "format": "date-time"}}}}},
                "LockList": {"type": "object", "properties": {
                    "locks": {"type": "array", "items": {"$ref": "#/components/schemas/Lock"}}}},
                "NewLock": {"type": "object", "required": ["mac", "name", "address"], "properties": {
                    "mac": {"type": "string", "example": "24:A1:60:54:AB:3C"},
                    "name": {"type": "string", "maxLength": 120}, "address": {"type": "string", "maxLength": 500},
                    "timezone": {"type": "string", "example": DEFAULT_TIMEZONE,
                                 "description": f"IANA zone; default {DEFAULT_TIMEZONE}"}}},
                "LockPatch": {"type": "object", "additionalProperties": False, "properties": {
                    "name": {"type": "string", "maxLength": 120}, "address": {"type": "string", "maxLength": 500},
                    "timezone": {"type": "string", "example": DEFAULT_TIMEZONE},
                    "checkin_time": CLOCK, "checkout_time": CLOCK}},
                "Provision": {"type": "object", "properties": {
                    "lock_id": {"type": "string"}, "secret": {"type": "string", "description": "64 hex digits"},
                    "backup_digest": {"type": "string", "description": "HMAC-SHA256(secret, backup key), hex"},
                    "mqtt": {"type": "object", "properties": {
                        "host": {"type": "string"}, "port": {"type": "integer"}, "tls": {"type": "boolean"},
                        "username": {"type": "string"}, "password": {"type": "string"}}}}},
                "NewCode": {"type": "object", "required": ["valid_from", "valid_until"], "properties": {
                    "valid_from": {"type": "string", "format": "date-time", "example": "2026-07-01T15:00:00+02:00"},
                    "valid_until": {"type": "string", "format": "date-time", "example": "2026-07-08T11:00:00+02:00"},
                    "customer_name": {"type": "string", "maxLength": 120},
                    "customer_email": {"type": "string", "format": "email"},
                    "locale": {"type": "string", "enum": ["en", "fr"], "default": "en",
                               "description": "language of the guest's email and page"}}},
                "Code": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "lock_id": {"type": "string"}, "code": {"type": "string"},
                    "status": {"type": "string", "enum": ["scheduled", "active", "expired", "revoked"]},
                    "on_lock": {"type": "string", "enum": ["on the lock", "pending"]},
                    "on_lock_at": {"type": "string", "format": "date-time", "nullable": True},
                    "valid_from": {"type": "string", "format": "date-time"},
                    "valid_until": {"type": "string", "format": "date-time"},
                    "customer_name": {"type": "string", "nullable": True},
                    "customer_email": {"type": "string", "nullable": True},
                    "created_by": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
                    "revoked_at": {"type": "string", "format": "date-time", "nullable": True},
                    "removed_at": {"type": "string", "format": "date-time", "nullable": True,
                                   "description": "when the lock confirmed it dropped the revoked code"},
                    "locale": {"type": "string", "enum": ["en", "fr"]},
                    "source": {"type": "string", "enum": ["manual", "calendar"]},
                    "reservation_uid": {"type": "string", "nullable": True,
                                        "description": "the feed event's UID for a calendar code"}}},
                "Calendar": {"type": "object", "properties": {
                    "lock_id": {"type": "string"}, "url": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "last_attempt_at": {"type": "string", "format": "date-time", "nullable": True},
                    "last_sync_at": {"type": "string", "format": "date-time", "nullable": True,
                                     "description": "last fetch that was read and applied"},
                    "last_error": {"type": "string", "nullable": True,
                                   "description": "why the last fetch changed nothing, or what could not be applied"},
                    "events_seen": {"type": "integer"}, "reservations_seen": {"type": "integer"},
                    "codes": {"type": "integer", "description": "live codes born from this feed"}}},
                "CalendarUrl": {"type": "object", "required": ["url"], "properties": {
                    "url": {"type": "string", "example": "https://www.airbnb.com/calendar/ical/123.ics?s=abc",
                            "description": "http(s) (webcal:// is read as https://); private addresses refused"}}},
                "CodePatch": {"type": "object", "additionalProperties": False, "properties": {
                    "customer_email": {"type": "string", "format": "email"},
                    "customer_name": {"type": "string", "maxLength": 120},
                    "send_guest_copy": {"type": "boolean", "default": True}}},
                "CodeList": {"type": "object", "properties": {
                    "codes": {"type": "array", "items": {"$ref": "#/components/schemas/Code"}}}},
            },
        },
        "paths": {
            "/tokens": {"post": {
                "summary": "Exchange email:password (HTTP Basic) for an API token", "security": [{"basic": []}],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"label": {"type": "string", "maxLength": 80}}}}}},
                "responses": {"201": _ok("a new token", "Token"), "401": _err("wrong credentials"),
                              "403": _err("staff cannot have API tokens"), "429": _err("rate limited")}}},
            "/locks": {
                "get": {"summary": "Locks of your agency", "security": AUTH,
                        "responses": {"200": _ok("locks", "LockList"), "401": COMMON["401"]}},
                "post": {"summary": "Register a lock (creates its secret and first backup key)", "security": AUTH,
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"$ref": "#/components/schemas/NewLock"}}}},
                         "responses": {"201": _ok("registered", "Lock"), "400": _err("invalid MAC/name/zone"),
                                       "401": COMMON["401"],
                                       "409": _err("MAC already registered; lock_id given when it is yours")}}},
            "/locks/{lock_id}": {
                "get": {"summary": "One lock", "security": AUTH, "parameters": [LOCK_ID],
                        "responses": {"200": _ok("the lock", "Lock"), **COMMON}},
                "patch": {"summary": "Edit a lock: name, address, time zone, default check-in/check-out times "
                                     "(fields left out keep their value)", "security": AUTH,
                          "parameters": [LOCK_ID],
                          "requestBody": {"required": True, "content": {"application/json": {
                              "schema": {"$ref": "#/components/schemas/LockPatch"}}}},
                          "responses": {"200": _ok("the edited lock", "Lock"),
                                        "400": _err("unknown field, empty name/address, unknown zone, "
                                                    "a time not HH:MM"), **COMMON}}},
            "/locks/{lock_id}/provision": {"post": {
                "summary": "Credentials for the installer tool (audited; includes the lock's secret)",
                "security": AUTH, "parameters": [LOCK_ID],
                "responses": {"200": _ok("provisioning data", "Provision"), **COMMON}}},
            "/locks/{lock_id}/codes": {"post": {
                "summary": "Generate a code for a rental period; emails it to the agency and the customer",
                "security": AUTH, "parameters": [LOCK_ID],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/NewCode"}}}},
                "responses": {"201": _ok("the code", "Code"),
                              "400": _err("invalid period or email; a period ending after 2106-02-07"),
                              **COMMON, "409": _err("the lock is not active yet / no free code")}}},
            "/locks/{lock_id}/calendar": {
                "get": {"summary": "The lock's reservation feed and its last sync", "security": AUTH,
                        "parameters": [LOCK_ID], "responses": {"200": _ok("the feed", "Calendar"), **COMMON}},
                "put": {"summary": "Attach or replace the lock's iCal feed (synced by the calendars worker)",
                        "security": AUTH, "parameters": [LOCK_ID],
                        "requestBody": {"required": True, "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/CalendarUrl"}}}},
                        "responses": {"200": _ok("replaced", "Calendar"), "201": _ok("attached", "Calendar"),
                                      "400": _err("not http(s), too long, unresolvable or a private address"),
                                      **COMMON}},
                "delete": {"summary": "Detach the feed (its codes stay)", "security": AUTH, "parameters": [LOCK_ID],
                           "responses": {"204": {"description": "removed"}, **COMMON}}},
            "/arrivals": {"get": {
                "summary": "Check-ins of the next 7 days on the agency's locks, with their readiness checks",
                "security": AUTH, "responses": {"200": {"description": "{\"arrivals\": [{code_id, lock_id, "
                                                        "valid_from, ready, checks{code_on_lock, "
                                                        "lock_seen_recently, clock_ok, backup_rotation_pending}, "
                                                        "problems, advice}]}"}, "401": COMMON["401"]}}},
            "/alert-settings": {
                "get": {"summary": "Alert kinds emailed to the owner", "security": AUTH,
                        "responses": {"200": {"description": "{\"on\": [kind], \"kinds\": [kind]}"}}},
                "put": {"summary": "Choose the alert kinds (owner/manager)", "security": AUTH,
                        "requestBody": {"required": True, "content": {"application/json": {"schema": {
                            "type": "object", "properties": {"on": {"type": "array", "items": {
                                "type": "string", "enum": ["offline", "backup_used", "lockout", "clock",
                                                           "not_ready"]}}}}}}},
                        "responses": {"200": {"description": "the new settings"}, "400": _err("unknown kind"),
                                      "403": _err("role")}}},
            "/webhooks": {
                "get": {"summary": "Webhook endpoints (owner/manager)", "security": AUTH,
                        "responses": {"200": {"description": "{\"webhooks\": [{id, url, events, created_at}]}"},
                                      "403": _err("role")}},
                "post": {"summary": "Add an endpoint; the answer carries its signing secret, once", "security": AUTH,
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "type": "object", "required": ["url"], "properties": {
                                 "url": {"type": "string"},
                                 "events": {"type": "array", "items": {"type": "string"}, "default": ["*"]}}}}}},
                         "responses": {"201": {"description": "{id, url, events, created_at, secret}"},
                                       "400": _err("bad URL / private address / unknown event"),
                                       "403": _err("role")}}},
            "/webhooks/{endpoint_id}": {"delete": {
                "summary": "Remove an endpoint and its log", "security": AUTH,
                "parameters": [{"name": "endpoint_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"204": {"description": "removed"}, **COMMON, "403": _err("role")}}},
            "/webhooks/{endpoint_id}/deliveries": {"get": {
                "summary": "The endpoint's last 100 deliveries", "security": AUTH,
                "parameters": [{"name": "endpoint_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "{\"deliveries\": [{event_id, event_type, status, attempts, "
                                                     "last_status, last_error, created_at, delivered_at}]}"},
                              **COMMON, "403": _err("role")}}},
            "/codes": {"get": {
                "summary": "Code history, newest first", "security": AUTH,
                "parameters": [
                    {"name": "lock_id", "in": "query", "schema": {"type": "string"}},
                    {"name": "status", "in": "query",
                     "schema": {"type": "string", "enum": ["scheduled", "active", "expired", "revoked"]}},
                    {"name": "customer", "in": "query", "schema": {"type": "string"},
                     "description": "guest name or email containing this text (case-insensitive, literal)"},
                    {"name": "since", "in": "query", "schema": {"type": "string", "format": "date"},
                     "description": "codes whose period reaches this UTC day (YYYY-MM-DD) or later"},
                    {"name": "until", "in": "query", "schema": {"type": "string", "format": "date"},
                     "description": "codes whose period starts on this UTC day (YYYY-MM-DD) or before; "
                                    "since after until answers 400"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100, "maximum": 1000}},
                    {"name": "offset", "in": "query",
                     "schema": {"type": "integer", "default": 0, "maximum": 2147483647}}],
                "responses": {"200": _ok("codes", "CodeList"), "400": _err("bad filter"), "401": COMMON["401"]}}},
            "/codes/{code_id}": {
                "get": {"summary": "One code", "security": AUTH, "parameters": [CODE_ID],
                        "responses": {"200": _ok("the code", "Code"), **COMMON}},
                "patch": {"summary": "Add or correct the guest (email, name); the guest gets their copy unless "
                                     "send_guest_copy is false", "security": AUTH, "parameters": [CODE_ID],
                          "requestBody": {"required": True, "content": {"application/json": {
                              "schema": {"$ref": "#/components/schemas/CodePatch"}}}},
                          "responses": {"200": _ok("the code", "Code"),
                                        "400": _err("bad email, unknown field, code no longer valid"), **COMMON}},
                "delete": {"summary": "Revoke a code (idempotent)", "security": AUTH, "parameters": [CODE_ID],
                           "responses": {"200": _ok("the revoked code", "Code"), **COMMON}}},
            "/me": {"get": {"summary": "Who the token belongs to", "security": AUTH,
                            "responses": {"200": {"description": "user and agency"}, "401": COMMON["401"]}}},
        },
    }
