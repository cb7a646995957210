"""AWS Bedrock Runtime's Converse API: ``https://bedrock-runtime.{region}.amazonaws.com/model/
{modelId}/converse-stream``, answered in event-stream frames (``dialects.converse``).

Authentication is a Bedrock API key (``api_key``, or ``AWS_BEARER_TOKEN_BEDROCK``) sent as a
bearer token, or else SigV4 over each request's body with botocore's signer and credential chain
(environment, shared config and credentials files, ``aws_profile``, session tokens, roles).
botocore is imported only when a provider signs (``pip install 'tokenrelay[aws]'``).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tokenrelay.transports.base import Transport

if TYPE_CHECKING:
    from tokenrelay.transports.base import ProviderSettings

BEARER_ENV = "AWS_BEARER_TOKEN_BEDROCK"
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d{1,2}$")
# What Bedrock takes as a model id: "vendor.model[-version][:n]", optionally behind an inference
# profile's geography ("us.", "eu.", "apac.", "global."), or an ARN. A bare family name
# ("claude-sonnet-4-5") is a Bedrock 400 at request time; refused at start-up instead.
_MODEL_ID = re.compile(
    r"^(?:[a-z]{2,6}\.)?[a-z0-9-]{1,63}\.[a-z0-9-]{1,63}(?:[.:]?[a-z0-9-]{1,63})*$"
    r"|^arn:aws(?:-[^:]+)?:bedrock:[a-z0-9-]{1,20}:\d{0,12}:[a-z-]+/[a-zA-Z0-9-:./]+$"
)


class Bedrock(Transport):
    NAME = "bedrock"
    DIALECT = "converse"
    # the model's place in the path is filled per target (``target_url``)
    PATHS = {
        "converse": "/model/{model}/converse-stream",
        "bedrock_invoke": "/model/{model}/invoke-with-response-stream",
    }
    # "chat": the Converse API, for every model; "invoke": InvokeModel with Anthropic's own body
    APIS = frozenset({"chat", "invoke"})
    HEADER_PREFIX = "x-amzn-bedrock-"
    PRICED_AS = "aws"
    SIGNS = True

    def __init__(self) -> None:
        self._signers: dict[tuple[str | None, str], Any] = {}  # (profile, region) -> signer

    def dialects(self, settings: ProviderSettings) -> tuple[str, str | None]:
        return ("bedrock_invoke" if settings.api == "invoke" else "converse"), None

    def url(self, settings: ProviderSettings, dialect: str, model: str | None = None) -> str:
        base = settings.base_url or f"https://bedrock-runtime.{region_of(settings)}.amazonaws.com"
        return base.rstrip("/") + self.PATHS[dialect]

    def target_url(self, url: str, model: str) -> str:
        return url.replace("{model}", quote(model, safe=""), 1)

    def auth_headers(self, settings: ProviderSettings, key: str | None) -> dict[str, str]:
        headers = {"accept": "application/vnd.amazon.eventstream"}
        bearer = key or os.environ.get(BEARER_ENV)
        if bearer:
            headers["authorization"] = f"Bearer {bearer}"
        return headers

    def check_target(self, settings: ProviderSettings, model: str) -> str | None:
        region = region_of(settings)
        if not region:
            return (
                "a bedrock provider needs its AWS region: set region = 'us-east-1' (or the "
                "variable AWS_REGION)"
            )
        if not _REGION.match(region) or not _known_region(region):
            return f"region = {region!r} is not an AWS region Bedrock serves (like 'us-east-1')"
        if not _MODEL_ID.match(model):
            return (
                f"{model!r} is not a Bedrock model id; write it like "
                "'anthropic.claude-sonnet-4-5-20250929-v1:0' or, for a cross-region inference "
                "profile, 'us.anthropic.claude-sonnet-4-5-20250929-v1:0'"
            )
        if _bearer(settings) is None:
            try:
                self._signer(settings)  # start-up: missing credentials are a ConfigError now
            except MissingCredentials as exc:
                return str(exc)
        return None

    def sign(
        self,
        settings: ProviderSettings,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
    ) -> dict[str, str]:
        if _bearer(settings) is not None:
            return headers
        return self._signer(settings)(method, url, headers, body)  # type: ignore[no-any-return]

    def _signer(self, settings: ProviderSettings) -> Any:
        """A function signing a request with SigV4 for service ``bedrock`` (one per profile
        and region; credentials are resolved once here, and refreshed by botocore)."""
        region = region_of(settings) or ""
        key = (settings.aws_profile, region)
        signer = self._signers.get(key)
        if signer is None:
            signer = self._signers[key] = _sigv4(settings.aws_profile, region)
        return signer


def region_of(settings: ProviderSettings) -> str | None:
    return settings.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def _bearer(settings: ProviderSettings) -> str | None:
    return settings.api_key or os.environ.get(BEARER_ENV) or None


def _known_region(region: str) -> bool:
    """Whether ``region`` is one of the AWS partitions' regions botocore knows (without
    botocore, the shape alone is checked). A region AWS opens later than the installed
    botocore is refused until botocore is upgraded: the message names the setting."""
    try:
        from botocore.loaders import create_loader
    except ImportError:
        return True
    partitions = create_loader().load_data("partitions")["partitions"]
    return any(region in partition.get("regions", {}) for partition in partitions)


class MissingCredentials(ValueError):
    """No AWS credentials and no Bedrock API key: the message says what to set."""


def _sigv4(profile: str | None, region: str) -> Any:
    try:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.session import Session
    except ImportError:
        raise MissingCredentials(
            "a bedrock provider without an API key signs with AWS credentials, which needs "
            "botocore: pip install 'tokenrelay[aws]' (or set AWS_BEARER_TOKEN_BEDROCK)"
        ) from None
    try:
        credentials = Session(profile=profile).get_credentials()
    except Exception as exc:  # botocore's ProfileNotFound and friends
        raise MissingCredentials(f"aws_profile = {profile!r}: {exc}") from None
    if credentials is None:
        raise MissingCredentials(
            "no AWS credentials found for the bedrock provider: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, a profile (aws_profile or AWS_PROFILE), or a Bedrock API "
            "key (api_key or AWS_BEARER_TOKEN_BEDROCK)"
        )
    auth = SigV4Auth(credentials, "bedrock", region)

    def sign(method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        auth.add_auth(request)
        return dict(request.headers.items())

    return sign
