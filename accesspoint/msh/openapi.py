"""The OpenAPI 3 document of the backend REST API (served at /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any, Final

_PROBLEM: Final = {
    "description": "problem",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_ID: Final = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}

OPENAPI: Final[dict[str, Any]] = {
    "openapi": "3.0.3",
    "info": {"title": "accesspoint backend API", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Problem": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                },
            },
            "Submission": {
                "type": "object",
                "properties": {
                    "pmode": {"type": "string"},
                    "service": {"type": "string"},
                    "action": {"type": "string"},
                    "to": {"type": "string", "description": "receiver PartyId"},
                    "message_id": {"type": "string"},
                    "conversation_id": {"type": "string", "description": "a reply takes its request's by default"},
                    "ref_to_message_id": {
                        "type": "string",
                        "description": "the received request this message answers (two-way: its P-Mode by default)",
                    },
                    "properties": {
                        "type": "object",
                        "description": "eb:MessageProperties: name to value, or to {value, type} for a typed one",
                        "additionalProperties": {
                            "oneOf": [
                                {"type": "string"},
                                {
                                    "type": "object",
                                    "required": ["value"],
                                    "properties": {"value": {"type": "string"}, "type": {"type": "string"}},
                                    "additionalProperties": False,
                                },
                            ]
                        },
                    },
                    "payloads": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "description": "JSON: data is required; multipart: part names the file part described",
                            "properties": {
                                "content_id": {"type": "string"},
                                "mime_type": {"type": "string"},
                                "data": {"type": "string", "format": "byte"},
                                "part": {"type": "string"},
                                "properties": {
                                    "type": "object",
                                    "description": (
                                        "PartProperties for its PartInfo (CharacterSet, others); MimeType is"
                                        " mime_type and CompressionType the P-Mode's"
                                    ),
                                    "additionalProperties": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
            "Message": {
                "type": "object",
                "properties": {
                    "message_id": {"type": "string"},
                    "direction": {"type": "string", "enum": ["in", "out"]},
                    "state": {"type": "string"},
                    "attempts": {"type": "integer"},
                    "ref_to_message_id": {"type": "string", "nullable": True},
                    "conversation_id": {"type": "string", "nullable": True},
                    "last_error": {"type": "object", "nullable": True},
                    "end_to_end": {"$ref": "#/components/schemas/EndToEnd"},
                    "header": {"$ref": "#/components/schemas/Header"},
                },
            },
            "Header": {
                "type": "object",
                "nullable": True,
                "description": (
                    "GET /api/v1/messages/{id} only: the user message's ebMS header as received or submitted (its"
                    " first raw-message evidence; null once that is purged), as `accesspoint inspect` prints it;"
                    " each payload there also has its PartProperties as `properties`"
                ),
                "properties": {
                    "from": {"$ref": "#/components/schemas/Party"},
                    "to": {"$ref": "#/components/schemas/Party"},
                    "agreement": {"type": "object", "nullable": True},
                    "service": {"type": "object", "properties": {"value": {"type": "string"}, "type": {}}},
                    "action": {"type": "string"},
                    "conversation_id": {"type": "string"},
                    "mpc": {"type": "string"},
                    "message_properties": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}, "value": {"type": "string"}, "type": {}},
                        },
                    },
                },
            },
            "Party": {
                "type": "object",
                "properties": {
                    "party_ids": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"value": {"type": "string"}, "type": {}}},
                    },
                    "role": {"type": "string"},
                },
            },
            "EndToEnd": {
                "type": "object",
                "description": (
                    "An outgoing message only, once the recipient's mailbox operator answered: its signed"
                    " DeliveryNotification, verified with the operator's certificate against what was sent"
                ),
                "properties": {
                    "status": {"type": "string", "enum": ["delivered-to-mailbox", "rejected"]},
                    "at": {"type": "string", "format": "date-time"},
                    "operator": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string"},
                            "subject": {"type": "string"},
                            "certificate_sha256": {"type": "string"},
                        },
                    },
                    "recipient": {"type": "string", "nullable": True},
                    "reasons": {"type": "array", "items": {"type": "object"}},
                    "reply_message_id": {"type": "string"},
                    "recorded_at": {"type": "string", "format": "date-time"},
                },
            },
            "WebhookEvent": {
                "type": "object",
                "description": (
                    "POSTed to each configured webhook URL (not part of this API): header X-Accesspoint-Event"
                    " names the event, X-Accesspoint-Signature is sha256=<hex HMAC-SHA256 of the body under the"
                    " webhook's secret>; retried with backoff until the backend answers 2xx"
                ),
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "event": {
                        "type": "string",
                        "enum": ["message-received", "message-refused", "receipt", "error", "end-to-end-receipt"],
                    },
                    "at": {"type": "string", "format": "date-time"},
                    "data": {
                        "description": (
                            "the Message; for end-to-end-receipt {message_id, end_to_end}; for message-refused the"
                            " refused message's message_id, ref_to_message_id, pmode, its Header's fields and"
                            " error {code, short_description, severity, category, detail}"
                        ),
                        "$ref": "#/components/schemas/Message",
                    },
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/messages": {
            "post": {
                "summary": "submit a message",
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Submission"}},
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["metadata"],
                                "description": (
                                    "a 'metadata' part first (a Submission without data: payloads[i].part names a"
                                    " file part and gives its content_id, mime_type, properties), then one file"
                                    " part per payload; a part's form name is its Content-ID unless metadata says"
                                ),
                                "properties": {"metadata": {"$ref": "#/components/schemas/Submission"}},
                                "additionalProperties": {"type": "string", "format": "binary"},
                            },
                            "encoding": {"metadata": {"contentType": "application/json"}},
                        },
                    }
                },
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "description": (
                            "1 to 255 visible ASCII characters: a retry under the key gets the first answer again"
                            " and stores nothing; another request under it is refused (409)"
                        ),
                        "schema": {"type": "string", "maxLength": 255},
                    }
                ],
                "responses": {
                    "202": {"description": "stored and queued (or the same answer to a retry of that request)"},
                    "400": _PROBLEM,
                    "401": _PROBLEM,
                    "403": _PROBLEM,
                    "409": _PROBLEM,
                    "413": _PROBLEM,
                    "422": _PROBLEM,
                    "503": _PROBLEM,
                },
            },
            "get": {
                "summary": "search messages",
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": "string"}}
                    for n in ("direction", "state", "pmode", "conversation_id", "ref_to_message_id", "limit")
                ],
                "responses": {"200": {"description": "messages"}, "400": _PROBLEM, "401": _PROBLEM},
            },
        },
        "/api/v1/messages/{id}": {
            "get": {
                "summary": "a message's state, payloads, history and evidence",
                "parameters": [_ID],
                "responses": {"200": {"description": "the message"}, "401": _PROBLEM, "404": _PROBLEM},
            }
        },
        "/api/v1/messages/{id}/payloads/{cid}": {
            "get": {
                "summary": "download a payload",
                "parameters": [_ID, {"name": "cid", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the payload bytes"}, "401": _PROBLEM, "404": _PROBLEM},
            }
        },
        "/api/v1/messages/{id}/ack": {
            "post": {
                "summary": "acknowledge a received message",
                "parameters": [_ID],
                "responses": {
                    "200": {"description": "acknowledged"},
                    "401": _PROBLEM,
                    "404": _PROBLEM,
                    "409": _PROBLEM,
                },
            }
        },
    },
}
