"""A household's consent to the meters enrolled for it.

A meter counts toward k (the fewest households in any released sum) only
once its household has signed the binding "these meters are mine" with a
key that only the household holds, made on its own device. The guardian
enrolls a meter for a household on the utility's proposal, and hands the
household a one-time activation code apart from the utility (by post, say).
At activation the household's device makes two key pairs (ECDSA P-256 to
sign, RSA-OAEP to receive its sealed readings), signs the consent statement,
and proves it knows the code with an HMAC over the same statement; the
utility's MDMS relays all of it, and can change none of it:

    statement = "gridveil-consent-v1|<household>|<meter,meter,...>|
                 <SHA-256 of the signing key>|<SHA-256 of the sealing key>"
    signature = ECDSA-P256-SHA256(signing key, statement)   (IEEE P1363: r || s)
    proof     = HMAC-SHA256(HKDF(code, info="gridveil-activation-v1|<household>"),
                            statement)

Later consents (a second meter) are signed with the same key, no code. All
of it is WebCrypto, so the portal does the household's side in the
browser; `gridveil customer activate` does it without served code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LABEL = "gridveil-consent-v1"
CODE_LABEL = "gridveil-activation-v1|"
MAX_METERS = 64  # meters one household consents to at once


class BadConsent(ValueError):
    """Not a consent the household made (malformed, or a signature or proof
    that does not hold)."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _ub64(s, what: str, limit: int = 4096) -> bytes:
    if not isinstance(s, str) or len(s) > limit:
        raise BadConsent(f"{what} must be base64 text")
    try:
        return base64.b64decode(s, validate=True)
    except ValueError:
        raise BadConsent(f"{what} is not base64") from None


def statement(household: str, meters, sign_pub: bytes, seal_pub: bytes) -> bytes:
    return "|".join([LABEL, household, ",".join(sorted(meters)),
                     hashlib.sha256(sign_pub).hexdigest(),
                     hashlib.sha256(seal_pub).hexdigest()]).encode()


def code_key(code: str, household: str) -> bytes:
    """The HMAC key an activation code stands for (what the guardian keeps)."""
    ikm = code.upper().replace("-", "").replace(" ", "").encode()
    return HKDF(hashes.SHA256(), 32, salt=None, info=(CODE_LABEL + household).encode()).derive(ikm)


def spki(pub) -> bytes:
    return pub.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(sign_priv: ec.EllipticCurvePrivateKey, household: str, meters, seal_pub: bytes,
         code: str | None = None) -> dict:
    """The household's consent to `meters`; with the activation code at
    first activation (then it also proves the code)."""
    pub = spki(sign_priv.public_key())
    st = statement(household, meters, pub, seal_pub)
    r, s = decode_dss_signature(sign_priv.sign(st, ec.ECDSA(hashes.SHA256())))
    out = {"household": household, "meters": sorted(meters), "sign_pub": _b64(pub),
           "seal_pub": _b64(seal_pub), "signature": _b64(r.to_bytes(32, "big") +
                                                         s.to_bytes(32, "big"))}
    if code is not None:
        out["proof"] = _b64(hmac.new(code_key(code, household), st, hashlib.sha256).digest())
    return out


def parse(d) -> tuple[str, list[str], bytes, bytes, bytes, bytes | None]:
    """(household, meters, signing key, sealing key, signature, proof) of a
    consent, checked for shape."""
    if not isinstance(d, dict):
        raise BadConsent("a consent is a JSON object")
    meters = d.get("meters")
    if not isinstance(meters, list) or not 1 <= len(meters) <= MAX_METERS or \
            not all(isinstance(m, str) and 0 < len(m) <= 64 for m in meters):
        raise BadConsent(f"meters: a list of 1 to {MAX_METERS} meter ids")
    household = d.get("household")
    if not isinstance(household, str) or not 0 < len(household) <= 64:
        raise BadConsent("household: a household id")
    proof = _ub64(d["proof"], "proof") if d.get("proof") is not None else None
    return (household, sorted(meters), _ub64(d.get("sign_pub"), "sign_pub"),
            _ub64(d.get("seal_pub"), "seal_pub", 8192), _ub64(d.get("signature"), "signature"),
            proof)


def verify(d, sign_pub: bytes | None = None, key: bytes | None = None):
    """The consent's (household, meters, signing key, sealing key), if the
    household's signature holds (with `sign_pub`: the key it activated
    with; else the one the consent carries) and, with `key`, it proves the
    activation code; BadConsent otherwise."""
    household, meters, pub, seal, sig, proof = parse(d)
    if sign_pub is not None and pub != sign_pub:
        raise BadConsent("not signed with the key this household activated")
    try:
        verifier = serialization.load_der_public_key(pub)
    except (ValueError, TypeError):
        raise BadConsent("the signing key is not a public key") from None
    if not isinstance(verifier, ec.EllipticCurvePublicKey) or \
            not isinstance(verifier.curve, ec.SECP256R1) or len(sig) != 64:
        raise BadConsent("the signing key must be ECDSA P-256, its signature 64 bytes")
    st = statement(household, meters, pub, seal)
    try:
        verifier.verify(encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                             int.from_bytes(sig[32:], "big")),
                        st, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise BadConsent("the household's signature does not hold") from None
    if key is not None and (proof is None or not hmac.compare_digest(
            proof, hmac.new(key, st, hashlib.sha256).digest())):
        raise BadConsent("the activation code does not match")
    from .customer import public_key

    try:
        public_key(seal)  # an RSA key, as the gateway seals to
    except Exception:  # noqa: BLE001 - malformed DER of any kind
        raise BadConsent("the sealing key must be RSA") from None
    return household, meters, pub, seal


BINDING_LABEL = "gridveil-binding-v1"


def binding_statement(household: str, meters, seal_pub: bytes) -> bytes:
    """What the guardian signs for gateways: seal the readings of this
    household's consented meters to this key."""
    return "|".join([BINDING_LABEL, household, ",".join(sorted(meters)),
                     hashlib.sha256(seal_pub).hexdigest()]).encode()


def check_binding(pub, d) -> tuple[str, list[str], bytes]:
    """(household, meters, sealing key DER) of a binding the guardian signed
    with `pub` (its Ed25519 key); BadConsent otherwise."""
    try:
        household, meters = str(d["household"]), [str(m) for m in d["meters"]]
        seal = base64.b64decode(d["seal_pub"], validate=True)
        pub.verify(base64.b64decode(d["signature"], validate=True),
                   binding_statement(household, meters, seal))
    except Exception:  # noqa: BLE001 - InvalidSignature, missing fields, bad base64
        raise BadConsent("not a binding signed by the privacy guardian") from None
    return household, meters, seal
