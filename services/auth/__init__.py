"""Who is calling and what they may do: ZITADEL tokens in, a `Principal` with permissions out.

`KeySetCache` keeps the issuer's signing keys, `TokenVerifier` turns a bearer token into a `Principal`,
`permissions` names what can be granted and the default role policy. `DevIssuer` stands in for ZITADEL
in dev mode. Nothing here knows about HTTP frameworks or GraphQL.
"""

from services.auth.errors import InvalidToken, KeysUnavailable
from services.auth.jwks import KeySetCache
from services.auth.permissions import DEFAULT_POLICY, Policy, PolicyError, parse_policy
from services.auth.principal import SYSTEM, Principal, principal_from_claims
from services.auth.tokens import TokenVerifier

__all__ = [
    "DEFAULT_POLICY",
    "SYSTEM",
    "InvalidToken",
    "KeySetCache",
    "KeysUnavailable",
    "Policy",
    "PolicyError",
    "Principal",
    "TokenVerifier",
    "parse_policy",
    "principal_from_claims",
]
