"""The one redaction every URL and message goes through before it reaches a terminal, a log or an artifact.

It removes a URL's user information (`scheme://user:password@`, `scheme://token@`), the values of secret-looking
query and key=value pairs (keys naming a secret, password, token, key, signature or credential), and the values of the
credential environment variables wherever they appear. Where a secret can be refused instead (in the storage URL, an
S3 endpoint, PREFECT_API_URL, a Dask address) it is refused before any work, and this is the second line of defence.
"""

from __future__ import annotations

import os
import re

# Variables whose values are secrets (AWS's, and Prefect's API key and auth string)
SECRET_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
)
MIN_SECRET_LENGTH = 4  # shorter values would blank out ordinary words
# Everything between :// and an @ counts as user information, '/' included, so that a password holding a '/' goes too
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^@\s]+@")
_KEY_VALUE = re.compile(
    r"(?i)(?P<key>[\w.-]*(?:secret|password|passwd|token|key|signature|credential)[\w.-]*)=[^&\s'\"]+"
)


def redact(text: str) -> str:
    """`text` with credentials removed: a URL's user information, secret query values and the secret variables'
    values become ***."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group('key')}=***", text)
    for var in SECRET_VARS:
        secret = os.environ.get(var)
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, "***")
    return text


def has_credentials(url: str) -> bool:
    """Whether `url` carries user information (user:password@ or token@) before its host."""
    return bool(_USERINFO.match(url.strip()))
