"""How secrets are kept out of what streamscore shows: URLs, librdkafka properties.

``SecretStr`` settings mask themselves; these helpers cover the rest: a password in a
URL's userinfo (moved out of a Redis URL, masked in any other URL that is shown) and the
librdkafka properties of ``kafka.client_config`` that hold secrets.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["SECRET_SHOWN", "is_secret_property", "mask_url_passwords", "split_url_password"]


def split_url_password(url: str) -> tuple[str, str | None]:
    """``url`` without the password in its userinfo, and that password (None: there is none).

    >>> split_url_password("redis://:s3cret@cache:6379/0")
    ('redis://cache:6379/0', 's3cret')
    >>> split_url_password("rediss://app:p%40ss@cache:6380/0")
    ('rediss://app@cache:6380/0', 'p@ss')
    """
    parts = urlsplit(url)
    if not parts.password:
        return url, None
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.netloc.rsplit("@", 1)[0].split(":", 1)[0]
    netloc = f"{user}@{host}" if user else host
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)


#: The password of a URL's userinfo (``scheme://user:PASSWORD@host``).
_URL_PASSWORD = re.compile(r"(//[^/@:\s]*:)[^@/\s]+@")


def mask_url_passwords(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``**********``.

    >>> mask_url_passwords("redis://:s3cret@cache:6379/0 and https://u:pw@registry")
    'redis://:**********@cache:6379/0 and https://u:**********@registry'
    """
    return _URL_PASSWORD.sub(r"\1**********@", text)


#: How a secret is shown: the way pydantic's ``SecretStr`` shows itself.
SECRET_SHOWN = "**********"  # noqa: S105 - the mask shown instead of a secret
#: librdkafka property names (``client_config`` keys) whose values are secrets.
_SECRET_PROPERTY = re.compile(
    r"password|secret|token|credential|key\.pem$|user\.info|jaas|oauthbearer\.config"
)


def is_secret_property(name: str) -> bool:
    """Whether a librdkafka property holds a secret (``sasl.password``, ``ssl.key.pem``...).

    >>> [is_secret_property(k) for k in ("sasl.password", "ssl.key.pem", "linger.ms")]
    [True, True, False]
    """
    return bool(_SECRET_PROPERTY.search(name.lower()))
