"""S3 credentials from a saved prefect-aws block, named by the run's `storage_block` parameter, for workers without AWS
variables.

The block's credentials, resolved by prefect-aws itself (static keys, a profile or an assumed role:
`get_boto3_session()`), go into this process's environment: cnn.storage's S3 client reads them there, the processes the
run starts (task-runner workers) inherit them, and cnn.storage.redact finds them there to remove from every message.
The parameter holds only the block's name, so no secret reaches parameters, logs or artifacts. Only prefect-aws's
AwsCredentials and S3Bucket are loaded, by their own classes: a name never selects which code is imported.
"""

from __future__ import annotations

import os
from typing import Any

from cnn.errors import ConfigError
from cnn.storage import ENDPOINT_VARS

FIELD = "storage_block"
ALLOWED = "aws-credentials/NAME or s3-bucket/NAME, saved on the Prefect server the run reports to"


def _block_class(kind: str) -> type:
    """prefect-aws's class for a block type slug (ConfigError when prefect-aws is not installed)."""
    try:
        from prefect_aws import AwsCredentials, S3Bucket
    except ImportError:
        raise ConfigError(
            FIELD, "needs prefect-aws, which is not installed", allowed="pip install 'cnn-lab[aws]'"
        ) from None
    return {"aws-credentials": AwsCredentials, "s3-bucket": S3Bucket}[kind]


def _load(name: str) -> Any:
    """The saved block `name` ('<type>/<block name>')."""
    from prefect.settings import PREFECT_API_URL

    kind, _, block_name = name.partition("/")
    if kind not in ("aws-credentials", "s3-bucket") or not block_name:
        raise ConfigError(FIELD, f"{name!r} is not a block name", allowed=ALLOWED)
    cls = _block_class(kind)
    if not PREFECT_API_URL.value():
        raise ConfigError(
            FIELD,
            f"{name!r} lives on a Prefect server: set PREFECT_API_URL to the server that holds it",
            allowed=ALLOWED,
        )
    try:
        return cls.load(block_name)
    except ValueError:
        raise ConfigError(
            FIELD, f"no {kind} block named {block_name!r} on the Prefect server at {PREFECT_API_URL.value()}", ALLOWED
        ) from None


def use_storage_block(name: str) -> None:
    """Put the credentials (and endpoint, when the block sets one) of the saved block `name` into this process's
    environment; '' leaves it as it is."""
    if not name:
        return
    block = _load(name)
    credentials = getattr(block, "credentials", block)  # an S3Bucket holds an AwsCredentials or MinIOCredentials block
    frozen = credentials.get_boto3_session().get_credentials()
    if frozen is None:
        raise ConfigError(FIELD, f"block {name!r} holds no usable credentials", allowed=ALLOWED)
    frozen = frozen.get_frozen_credentials()
    values = {
        "AWS_ACCESS_KEY_ID": frozen.access_key,
        "AWS_SECRET_ACCESS_KEY": frozen.secret_key,
        "AWS_SESSION_TOKEN": frozen.token,
        "AWS_DEFAULT_REGION": getattr(credentials, "region_name", None),
        ENDPOINT_VARS[0]: credentials.aws_client_parameters.endpoint_url,
    }
    os.environ.pop("AWS_PROFILE", None)  # botocore skips the keys in the environment when a profile is named there
    for var, value in values.items():
        if value:
            os.environ[var] = str(value)
        elif var == "AWS_SESSION_TOKEN":
            os.environ.pop(var, None)  # a token from the environment would not match the block's keys
