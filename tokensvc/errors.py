"""Twilio-shaped errors (SPEC §2) as data: one class carries status, code and message, and one
constructor per condition builds it. No web framework here: tokensvc/api/render.py renders."""

from __future__ import annotations


class TwilioError(Exception):
    """A failure the API reports to its caller with an HTTP status and a Twilio error code."""

    def __init__(self, status: int, code: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


# The catalogue of SPEC §2: one constructor per condition, used everywhere it applies.


def unauthorized(message: str = "Authenticate") -> TwilioError:
    return TwilioError(401, 20003, message, {"WWW-Authenticate": 'Basic realm="tokensvc"'})


def invalid_token(message: str = "Invalid Access Token") -> TwilioError:
    return TwilioError(401, 20101, message)


def expired_token() -> TwilioError:
    return TwilioError(401, 20104, "Access Token expired or expiration date invalid")


def forbidden(message: str = "The role does not have permission for this action") -> TwilioError:
    return TwilioError(403, 20403, message)


def not_found(message: str = "The requested resource was not found") -> TwilioError:
    return TwilioError(404, 20404, message)


def method_not_allowed(allowed: tuple[str, ...] = ()) -> TwilioError:
    headers = {"Allow": ", ".join(allowed)} if allowed else None
    return TwilioError(405, 20004, "Method not allowed", headers)


def missing_param(name: str) -> TwilioError:
    return TwilioError(400, 20001, f"Missing required parameter {name} in the post body")


def invalid_param(name: str, detail: str) -> TwilioError:
    return TwilioError(400, 20001, f"Invalid parameter {name}: {detail}")


def invalid_page_token() -> TwilioError:
    return TwilioError(400, 21481, "Invalid PageToken")


def page_too_deep() -> TwilioError:
    """An offset page past the bound where offset paging stays cheap (a cursor is needed)."""
    return TwilioError(400, 20001, "Page is too deep without a PageToken: follow next_page_url")


def wrong_content_type(expected: str, got: str) -> TwilioError:
    return TwilioError(400, 20001, f"Request body must be {expected}, not {got[:64]}")


def body_not_utf8() -> TwilioError:
    return TwilioError(400, 20001, "Request body is not valid UTF-8")


def too_many_params() -> TwilioError:
    return TwilioError(400, 20001, "Request body has too many parameters")


def invalid_query() -> TwilioError:
    return TwilioError(400, 20001, "Query string is not valid")


def invalid_frame(detail: str) -> TwilioError:
    """A /v2/Connect frame the hub cannot act on."""
    return TwilioError(400, 20001, detail)


def invalid_http_request() -> TwilioError:
    """What the HTTP parser refused, when it is not an unknown method."""
    return TwilioError(400, 20001, "Invalid HTTP request")


def head_too_large(max_head_bytes: int, max_line_bytes: int) -> TwilioError:
    return TwilioError(431, 20001, f"Request head is larger than {max_head_bytes} bytes, or has a line "
                                   f"longer than {max_line_bytes} bytes")


def http_status(status: int, detail: str) -> TwilioError:
    """A status the framework raised that has no entry of its own here (404 and 405 do)."""
    return TwilioError(status, 20001, detail)


def identity_too_long() -> TwilioError:
    return TwilioError(400, 50207, "Identity is too long: at most 256 characters")


def identity_looks_like_sid() -> TwilioError:
    return TwilioError(400, 50206, "Identity must not look like a User SID")


def role_in_use() -> TwilioError:
    return TwilioError(409, 50100, "Role is in use by the service or its users and cannot be deleted")


def identity_taken() -> TwilioError:
    return TwilioError(409, 50201, "User already exists")


def created_and_deleted() -> TwilioError:
    """A get-or-create that lost its race to a user deleted again before it could be read."""
    return TwilioError(409, 50201, "User was concurrently created and deleted; retry")


def invalid_attributes() -> TwilioError:
    return TwilioError(400, 50304, "Attributes must be a valid JSON string")


def attributes_too_long() -> TwilioError:
    return TwilioError(400, 50303, "Attributes are too long: at most 16384 bytes")


def friendly_name_too_long() -> TwilioError:
    return TwilioError(400, 50003, "FriendlyName is too long: at most 256 characters")


def invalid_role(name: str = "RoleSid") -> TwilioError:
    return TwilioError(400, 50102, f"{name} is not a valid deployment role of this service")


def invalid_binding_type() -> TwilioError:
    return TwilioError(400, 50209, "BindingType must be one of apn, gcm, fcm")


def unknown_credential() -> TwilioError:
    """A push registration naming a credential that is not one of the account's (SPEC §9)."""
    return TwilioError(400, 52002, "CredentialSid is not a push credential of this account")


def credential_type_mismatch() -> TwilioError:
    return TwilioError(400, 52003, "The credential's type differs from BindingType")


def ttl_too_long(max_ttl: int) -> TwilioError:
    return TwilioError(400, 20157, f"Ttl exceeds the maximum of {max_ttl} seconds")


def too_many_requests(retry_after: int, message: str = "Too many requests") -> TwilioError:
    return TwilioError(429, 20429, message, {"Retry-After": str(max(1, int(retry_after)))})


def body_too_large(limit: int) -> TwilioError:
    return TwilioError(413, 20001, f"Request body is larger than {limit} bytes")


def database_busy(retry_after: int = 1) -> TwilioError:
    """The database stayed locked by another connection longer than a request may wait."""
    return TwilioError(503, 20503, "Database busy: retry later", {"Retry-After": str(retry_after)})


def internal_error(request_id: str) -> TwilioError:
    return TwilioError(500, 20500, f"Internal server error (request id {request_id})")



# ---- Channels, Members, User Channels, Invites (SPEC §8)


def unique_name_too_long() -> TwilioError:
    return TwilioError(400, 50004, "UniqueName is too long: at most 256 characters")


def unique_name_looks_like_sid() -> TwilioError:
    return TwilioError(400, 50306, "UniqueName must not look like a Channel SID")


def unique_name_taken() -> TwilioError:
    return TwilioError(409, 50307, "Channel with this UniqueName already exists")


def invalid_date_created() -> TwilioError:
    return TwilioError(400, 50308, "DateCreated must be an ISO 8601 date")


def invalid_date_updated() -> TwilioError:
    return TwilioError(400, 50309, "DateUpdated must be an ISO 8601 date")


def nothing_to_update() -> TwilioError:
    return TwilioError(400, 50347, "No parameter to update was given")


def invalid_channel_role(name: str = "RoleSid") -> TwilioError:
    return TwilioError(400, 50101, f"{name} is not a valid channel role of this service")


def channel_full() -> TwilioError:
    return TwilioError(400, 50403, "Channel member limit exceeded")


def already_member() -> TwilioError:
    return TwilioError(409, 50404, "Member already exists")


def invalid_consumption_timestamp() -> TwilioError:
    return TwilioError(400, 50405, "LastConsumptionTimestamp must be an ISO 8601 date")


def invalid_message_index() -> TwilioError:
    return TwilioError(400, 50406, "LastConsumedMessageIndex must be an integer of at least 0")


def user_channels_exceeded() -> TwilioError:
    return TwilioError(400, 50208, "User channel limit exceeded")


def invalid_notification_level() -> TwilioError:
    return TwilioError(400, 50210, "NotificationLevel must be default or muted")


def already_invited() -> TwilioError:
    return TwilioError(409, 50212, "Invite already exists")


# ---- Webhooks (SPEC §10): Twilio's own codes for the service's webhook settings and outcomes


def invalid_webhook_filter(name: str) -> TwilioError:
    return TwilioError(400, 50054, f"WebhookFilters: unknown event {name[:64]!r}")


def invalid_webhook_method() -> TwilioError:
    return TwilioError(400, 50055, "WebhookMethod must be GET or POST")


def invalid_webhook_retry_count(name: str) -> TwilioError:
    return TwilioError(400, 50065, f"{name} must be an integer from 0 to 3")


def invalid_pre_webhook_url() -> TwilioError:
    return TwilioError(400, 50077, "PreWebhookUrl must be an http or https URL")


def invalid_post_webhook_url() -> TwilioError:
    return TwilioError(400, 50078, "PostWebhookUrl must be an http or https URL")


def webhook_rejected() -> TwilioError:
    return TwilioError(403, 50056, "The pre-event webhook rejected the action")


def webhook_timeout() -> TwilioError:
    return TwilioError(504, 50076, "The pre-event webhook did not answer in time")
