"""Test identities for the LiteLLM proxy of tests/tests/litellm.rs, in place of LiteLLM's key
database (which needs Postgres): FAREGATE_TEST_LITELLM_KEYS is a JSON object from each API key
to its `{"org", "team", "user"}`; any other key is refused (401)."""

import json
import os

from fastapi import Request
from litellm.proxy._types import UserAPIKeyAuth

KEYS = json.loads(os.environ["FAREGATE_TEST_LITELLM_KEYS"])


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    who = KEYS.get(api_key)
    if who is None:
        raise Exception("unknown test key")
    return UserAPIKeyAuth(api_key=api_key, org_id=who["org"], team_id=who["team"], user_id=who["user"])
