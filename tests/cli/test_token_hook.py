"""`tokensvc token` provisions as the token endpoint does: a new identity asks the service's
onUserAdd hook first (a refusal writes nothing and exits 1 with the Twilio code), and the hook
may set the new user's fields."""

from __future__ import annotations

import json

from twilio.request_validator import RequestValidator

from cli_helpers import Cli, cli  # noqa: F401
from tokensvc.store.services import update_service
from webhook_receiver import serve


def test_token_asks_on_user_add_refused_writes_nothing_allowed_takes_its_fields(cli: Cli) -> None:
    svc = cli.service("hooked")
    for receiver in serve():
        db = cli.database()
        hook = {"pre_webhook_url": receiver.url, "webhook_filters": ["onUserAdd"]}
        try:
            db.call(update_service, account_sid=cli.account, sid=svc["sid"], changes=hook)
        finally:
            db.dispose()
        receiver.statuses = [403]
        cli.refused(50056, "token", "no-one", "--service", svc["sid"], account=False)
        [asked] = receiver.matching(EventType="onUserAdd")
        assert asked.params["Identity"] == "no-one" and asked.params["Source"] == "API"
        assert RequestValidator(cli.auth_token).validate(asked.url, asked.params, asked.headers["x-twilio-signature"])
        cli.refused(20404, "users", "get", svc["sid"], "no-one")  # nothing written
        receiver.body = json.dumps({"FriendlyName": "Named by the hook"}).encode()
        made = cli.json("token", "someone", "--service", svc["sid"], account=False)
        assert made["identity"] == "someone"
        assert cli.json("users", "get", svc["sid"], "someone")["friendly_name"] == "Named by the hook"
